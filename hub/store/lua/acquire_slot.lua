-- Takes one of a user's connection slots, counting every hub process's
-- connections, so a user cannot get N x limit by spreading over N processes.
-- Slots of processes that stopped renewing their liveness key (crashed) are
-- dropped on the way.
--
-- KEYS: the user's slot hash (process id -> open connections)
-- ARGV: this process's id, the per-user limit, liveness key prefix, hash ttl
-- Returns the user's connections after taking the slot, or -1 at the limit.
local total = 0
local slots = redis.call('HGETALL', KEYS[1])
for i = 1, #slots, 2 do
  local process, count = slots[i], tonumber(slots[i + 1])
  if process ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. process) == 0 then
    redis.call('HDEL', KEYS[1], process)
  else
    total = total + count
  end
end
if total >= tonumber(ARGV[2]) then
  return -1
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return total + 1
