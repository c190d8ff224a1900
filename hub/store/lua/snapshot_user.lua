-- Reads, atomically, the state of every unfinished job of a user and the
-- head of the user's stream, so `/my` can start from a consistent point.
--
-- KEYS: user open-jobs set, user stream. ARGV: job hash key prefix.
-- Returns {head id or false, state JSON, state JSON, ...}.
local head = false
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then
  head = last[1][1]
end
local result = {head}
for _, job_id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local state = redis.call('HGET', ARGV[1] .. job_id, 'state')
  if state then
    table.insert(result, state)
  else
    redis.call('SREM', KEYS[1], job_id)
  end
end
return result
