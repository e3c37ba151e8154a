if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[1])
if ARGV[5] == '1' then redis.call('DEL', KEYS[3]) end
redis.call('PUBLISH', ARGV[4], '')
return 1
