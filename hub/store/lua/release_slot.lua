-- Gives back `ARGV[2]` of a user's slots held by process `ARGV[1]`.
-- KEYS: the user's slot hash.
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
if left <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return left
