local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = tonumber(ARGV[2])
for _, set in ipairs(KEYS) do
  redis.call('ZADD', set, 'GT', now + keep, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  redis.call('PEXPIRE', set, keep, 'GT')
  redis.call('PEXPIRE', set, keep, 'NX')
end
return #KEYS
