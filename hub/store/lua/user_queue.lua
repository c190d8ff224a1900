-- One user's share of the job queue: at most `limit` of the user's jobs are
-- in the broker's queue or running at once; the others are held here, in
-- order, and the oldest goes to the broker when one of those ends. So one
-- user's backlog never stands in front of another user's job.
--
-- A job counts once, by its id, however often the broker delivers it (a
-- retry, a redelivery after a worker died). A job stops counting when this
-- script is told it ended, or when it is seen finished (failed as stalled,
-- say, or its worker died before telling) or lost (still `queued` but its
-- message is gone from the broker).
--
-- KEYS: the user's in-flight hash (job id -> broker queue key TAB message id),
--       the user's held list, the set of users with held jobs
-- ARGV: user id, an entry to hold (JSON) or "", a job that ended or "",
--       job key prefix, ttl (seconds)
-- An entry: {"job": id, "limit": N, "queue": broker queue key,
--            "rid": broker message id, "data": the encoded broker message}.
-- The broker is Dramatiq's Redis broker: a message is its data in the hash
-- "<queue>.msgs" under its id, and its id pushed on the list "<queue>".
-- Returns the ids of the jobs handed to the broker by this call.
if cjson.decode_array_with_array_mt then
  cjson.decode_array_with_array_mt(true)
end
local inflight, held, waiting = KEYS[1], KEYS[2], KEYS[3]
local user, ended, job_prefix, ttl = ARGV[1], ARGV[3], ARGV[4], tonumber(ARGV[5])
-- Enough for any limit in use; a longer backlog of finished entries is
-- dropped by the next calls.
local MAX_STEPS = 200

local function status_of(job)
  local raw = redis.call('HGET', job_prefix .. job, 'state')
  if not raw then
    return nil
  end
  return cjson.decode(raw).status
end

if ended ~= '' then
  redis.call('HDEL', inflight, ended)
end
local counted = redis.call('HGETALL', inflight)
for i = 1, #counted, 2 do
  local job, where = counted[i], counted[i + 1]
  local status = status_of(job)
  local gone = status == nil or TERMINAL[status]
  -- Neither finished nor running: queued, so its message must be in the broker.
  if not gone and not RUNNING[status] then
    local queue, rid = string.match(where, '^(.*)\t(.*)$')
    gone = redis.call('HEXISTS', queue .. '.msgs', rid) == 0
  end
  if gone then
    redis.call('HDEL', inflight, job)
  end
end

if ARGV[2] ~= '' then
  redis.call('RPUSH', held, ARGV[2])
end
local started = {}
for _ = 1, MAX_STEPS do
  local head = redis.call('LINDEX', held, 0)
  if not head then
    break
  end
  local entry = cjson.decode(head)
  if redis.call('HLEN', inflight) >= tonumber(entry.limit) then
    break
  end
  redis.call('LPOP', held)
  local status = status_of(entry.job)
  -- A job that expired or finished while held is not sent.
  if status ~= nil and not TERMINAL[status] then
    redis.call('HSET', inflight, entry.job, entry.queue .. '\t' .. entry.rid)
    redis.call('HSET', entry.queue .. '.msgs', entry.rid, entry.data)
    redis.call('RPUSH', entry.queue, entry.rid)
    started[#started + 1] = entry.job
  end
end

if redis.call('LLEN', held) > 0 then
  redis.call('SADD', waiting, user)
  redis.call('EXPIRE', held, ttl)
else
  redis.call('SREM', waiting, user)
end
if redis.call('HLEN', inflight) > 0 then
  redis.call('EXPIRE', inflight, ttl)
end
return started
