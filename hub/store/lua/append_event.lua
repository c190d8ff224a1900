-- Applies one state change to a job and records it, atomically:
-- job state, job stream, user stream and pub/sub are updated together, so a
-- subscriber can never see a published event that history lacks.
--
-- KEYS: job hash, job stream, user stream, user open-jobs set, job channel,
--       user channel, running-jobs index (sorted by last change), user's
--       job index
-- ARGV: patch (JSON object), publish time (epoch seconds), job history length,
--       user history length, ttl seconds, create ("1" or "0"), owner, job type,
--       job id, "changed before" (ms) or "": apply only if the job has not
--       changed since then (how a stalled job is failed safely), the publish
--       command ("PUBLISH", or "SPUBLISH" on a cluster: the channels are in
--       the keys' slot), and on create the job's input (JSON) and "1" if the
--       job is external (watched for stalls from its creation: its publisher
--       may never start)
-- Returns {job stream id, user stream id}, or false when the job is unknown,
-- already finished (so a job has exactly one terminal event), or changed.
if cjson.decode_array_with_array_mt then
  cjson.decode_array_with_array_mt(true)
end

local publish = ARGV[11]
if publish ~= 'PUBLISH' and publish ~= 'SPUBLISH' then
  return redis.error_reply('unknown publish command')
end
local patch = cjson.decode(ARGV[1])
local state
if ARGV[6] == '1' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.error_reply('job exists')
  end
  state = {}
  for key, value in pairs(patch) do
    state[key] = value
  end
  state.jobId = ARGV[9]
  state.type = ARGV[8]
  redis.call('HSET', KEYS[1], 'owner', ARGV[7], 'type', ARGV[8], 'input', ARGV[12])
  redis.call('SADD', KEYS[4], ARGV[9])
else
  local raw = redis.call('HGET', KEYS[1], 'state')
  if not raw then
    return false
  end
  state = cjson.decode(raw)
  if TERMINAL[state.status] then
    return false
  end
  if ARGV[10] and ARGV[10] ~= '' then
    local changed = tonumber(redis.call('HGET', KEYS[1], 'changed_ms') or '0')
    if changed > tonumber(ARGV[10]) then
      return false
    end
  end
  -- Progress never goes down within one attempt; a new attempt starts over.
  local same_attempt = patch.attempt == nil or patch.attempt == state.attempt
  if same_attempt and patch.progress ~= nil and state.progress ~= nil
      and patch.progress < state.progress then
    patch.progress = state.progress
  end
  for key, value in pairs(patch) do
    state[key] = value
  end
end
state.updatedAt = patch.timestamp
state.timestamp = nil

local event = {}
for key, value in pairs(patch) do
  event[key] = value
end
event.type = 'job_update'
event.jobId = ARGV[9]
event.jobType = ARGV[8]
if event.status == nil then
  event.status = state.status
end
if event.progress == nil then
  event.progress = state.progress
end
-- cjson escapes every '/' as '\/'; a '/' never stands unescaped in its
-- output, so each '\/' is an escaped slash and may be written plainly.
local data = string.gsub(cjson.encode(event), '\\/', '/')
local finished = '0'
if TERMINAL[state.status] then
  finished = '1'
end

-- The user stream hands out the id; the job stream reuses it, so one cursor
-- means the same point in time on `/my` and on the job's own stream.
local user_id = redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], '*', FIELD_DATA, data, FIELD_PUBLISHED, ARGV[2], FIELD_TERMINAL, finished)
local job_id = redis.pcall('XADD', KEYS[2], 'MAXLEN', ARGV[3], user_id, FIELD_DATA, data, FIELD_PUBLISHED, ARGV[2], FIELD_TERMINAL, finished)
if type(job_id) == 'table' and job_id.err then
  -- Only if the user stream was lost while the job's was not.
  job_id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', FIELD_DATA, data, FIELD_PUBLISHED, ARGV[2], FIELD_TERMINAL, finished)
end

local state_json = string.gsub(cjson.encode(state), '\\/', '/')
local now_ms = math.floor(tonumber(ARGV[2]) * 1000)
redis.call('HSET', KEYS[1], 'state', state_json, 'last_id', job_id, 'changed_ms', now_ms)
if finished == '1' then
  redis.call('HSET', KEYS[1], 'terminal_id', job_id)
  redis.call('SREM', KEYS[4], ARGV[9])
  redis.call('ZREM', KEYS[7], ARGV[9])
elseif RUNNING[state.status] or (ARGV[6] == '1' and ARGV[13] == '1') then
  -- Watched for stalls: a running job that stops changing is failed in the end.
  redis.call('ZADD', KEYS[7], now_ms, ARGV[9])
end
local ttl = tonumber(ARGV[5])
if ARGV[6] == '1' then
  -- Newest last; a cursor sorts as text once zero-padded, and it is unique.
  local ms, seq = string.match(user_id, '^(%d+)-(%d+)$')
  local function pad(digits)
    return string.rep('0', 20 - #digits) .. digits
  end
  redis.call('ZADD', KEYS[8], 0, pad(ms) .. '-' .. pad(seq) .. ':' .. ARGV[9])
  redis.call('ZREMRANGEBYRANK', KEYS[8], 0, -tonumber(ARGV[4]) - 1)
end
redis.call('EXPIRE', KEYS[8], ttl)
for i = 1, 4 do
  redis.call('EXPIRE', KEYS[i], ttl)
end

local function message(id)
  return table.concat({id, ARGV[2], finished, data}, MESSAGE_SEPARATOR)
end
redis.call(publish, KEYS[5], message(job_id))
redis.call(publish, KEYS[6], message(user_id))
return {job_id, user_id}
