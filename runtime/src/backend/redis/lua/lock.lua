if redis.call('GET', KEYS[2]) == ARGV[1] then return {3} end
if ARGV[3] == '1' then
  local v = redis.call('GET', KEYS[1])
  if v then return {1, v, redis.call('PTTL', KEYS[1])} end
end
local f = redis.call('GET', KEYS[3])
if f and ARGV[4] == '1' then return {2, f} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {3} end
return {4, f}
