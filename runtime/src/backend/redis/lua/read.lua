return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[3]), redis.call('EXISTS', KEYS[2])}
