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
-- Where the broker is decides who sends. "here": the broker is Dramatiq's
-- Redis broker on this very Redis, and the script sends (a message is its
-- data in the hash "<queue>.msgs" under its id, and its id pushed on the
-- list "<queue>") and looks for lost messages itself, atomically with the
-- count. "apart" (a cluster, or HUB_BROKER_URL): the script only touches
-- the user's slot; it returns what to send, the caller sends it, and the
-- caller names the jobs whose messages it did not find in the broker. Until
-- a job is seen running its message stays with its count (and its user in
-- the set of users to sweep), so that a message the caller failed to send
-- (it died, the broker did not answer) is sent again instead of lost.
--
-- KEYS: the user's in-flight hash (job id -> broker queue key TAB message id,
--       "apart": then TAB when it was sent (ms) TAB the message while queued),
--       the user's held list, the set of users with held jobs (of the
--       user's bucket)
-- ARGV: user id, an entry to hold (JSON) or "", a job that ended or "",
--       job key prefix, ttl (seconds), "here" or "apart"; "apart" only: the
--       jobs whose messages the broker lacks (space-separated), now (ms)
-- An entry: {"job": id, "limit": N, "queue": broker queue key,
--            "rid": broker message id, "data": the encoded broker message}.
-- Returns "here": the ids of the jobs handed to the broker by this call;
-- "apart": {job id, queue key, message id, message, ...} of each job to send.
if cjson.decode_array_with_array_mt then
  cjson.decode_array_with_array_mt(true)
end
local inflight, held, waiting = KEYS[1], KEYS[2], KEYS[3]
local user, ended, job_prefix, ttl = ARGV[1], ARGV[3], ARGV[4], tonumber(ARGV[5])
local here = ARGV[6] == 'here'
local lost = {}
if not here then
  for job in string.gmatch(ARGV[7], '%S+') do
    lost[job] = true
  end
end
local now = ARGV[8]
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

local sends = {}
-- Sent by the caller ("apart"): counted with its message until seen running.
local function to_send(job, queue, rid, data)
  redis.call('HSET', inflight, job, table.concat({queue, rid, now, data}, '\t'))
  for _, part in ipairs({job, queue, rid, data}) do
    sends[#sends + 1] = part
  end
end

if ended ~= '' then
  redis.call('HDEL', inflight, ended)
end
local unsent = 0
local counted = redis.call('HGETALL', inflight)
for i = 1, #counted, 2 do
  local job, where = counted[i], counted[i + 1]
  local status = status_of(job)
  local gone = status == nil or TERMINAL[status]
  local queue, rid, rest = string.match(where, '^([^\t]*)\t([^\t]*)\t?(.*)$')
  if not gone and RUNNING[status] then
    if rest ~= '' then
      redis.call('HSET', inflight, job, queue .. '\t' .. rid)
    end
  elseif not gone and here then
    -- Neither finished nor running: queued, so its message must be in the broker.
    gone = redis.call('HEXISTS', queue .. '.msgs', rid) == 0
  elseif not gone then
    local data = string.match(rest, '^[^\t]*\t(.*)$')
    if lost[job] and data then
      to_send(job, queue, rid, data)
    elseif lost[job] then
      gone = true
    end
    if data then
      unsent = unsent + 1
    end
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
    if here then
      redis.call('HSET', inflight, entry.job, entry.queue .. '\t' .. entry.rid)
      redis.call('HSET', entry.queue .. '.msgs', entry.rid, entry.data)
      redis.call('RPUSH', entry.queue, entry.rid)
      started[#started + 1] = entry.job
    else
      to_send(entry.job, entry.queue, entry.rid, entry.data)
      unsent = unsent + 1
    end
  end
end

if redis.call('LLEN', held) > 0 or unsent > 0 then
  redis.call('SADD', waiting, user)
  redis.call('EXPIRE', held, ttl)
else
  redis.call('SREM', waiting, user)
end
if redis.call('HLEN', inflight) > 0 then
  redis.call('EXPIRE', inflight, ttl)
end
if here then
  return started
end
return sends
