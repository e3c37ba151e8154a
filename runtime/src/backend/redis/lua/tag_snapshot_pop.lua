if ARGV[2] == '1' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZRANGESTORE', KEYS[2], KEYS[1], 0, -1) == 0 then return {0, {}} end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local popped = redis.call('ZPOPMIN', KEYS[2], tonumber(ARGV[1]))
local slots = {}
for i = 1, #popped, 2 do
  local slot = popped[i]
  if ARGV[4] == '1' then
    redis.call('DEL', slot .. ':value', slot .. ':lock', slot .. ':fail')
    redis.call('PUBLISH', slot .. ':ready', '')
  else
    slots[#slots + 1] = slot
  end
end
return {redis.call('ZCARD', KEYS[2]), slots}
