-- Reads one page of a user's unfinished jobs, so that `/my` can start from a
-- consistent point however many there are, and no reply holds them all.
--
-- The first page reads the head of the user's stream in the same call. When
-- the jobs fill more than one page, the ids of the jobs open at that head are
-- copied into a sorted set (the "order", one per head, kept for a while) and
-- the pages walk it in byte order, after the last job of the previous page:
-- a set's own order changes as it grows, and sorting in Lua on every page
-- would cost far more. Later pages leave out any job whose last event is
-- after the head: it changed after the snapshot's point in time, and its
-- events after the head tell it. (Should the order expire, it is rebuilt
-- from the jobs open now; those newer than the head are left out all the same.)
--
-- KEYS: user open-jobs set, user stream.
-- ARGV: job hash key prefix, page size, the last job id of the previous page
--       ("" for the first page), the snapshot's head ("" for the first page;
--       "0-0" when the user had no stream: nothing is left out then), the
--       order's key prefix (the head is appended), the order's ttl seconds.
-- Returns {head or false, 1 if jobs remain after this page else 0,
--          job id, state JSON, job id, state JSON, ...}.
local limit = tonumber(ARGV[2])
local after = ARGV[3]
local head = ARGV[4]
if head == '' then
  head = false
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last > 0 then
    head = last[1][1]
  end
end

local function stream_id(text)
  local ms, seq = string.match(text, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local head_ms, head_seq
if head and head ~= '0-0' then
  head_ms, head_seq = stream_id(head)
end

local result = {head, 0}
local taken = 0

-- Adds the job to the page; false if it is gone (its hash expired).
local function take(job_id)
  local fields = redis.call('HMGET', ARGV[1] .. job_id, 'state', 'last_id')
  if not fields[1] then
    redis.call('SREM', KEYS[1], job_id)
    return false
  end
  if head_ms and fields[2] then
    local ms, seq = stream_id(fields[2])
    if ms > head_ms or (ms == head_ms and seq > head_seq) then
      return true
    end
  end
  table.insert(result, job_id)
  table.insert(result, fields[1])
  taken = taken + 1
  return true
end

if after == '' and redis.call('SCARD', KEYS[1]) <= limit then
  -- One page holds them all: no order is needed.
  for _, job_id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    take(job_id)
  end
  return result
end

local order = ARGV[5] .. (head or '0-0')
if redis.call('EXISTS', order) == 0 then
  local members = redis.call('SMEMBERS', KEYS[1])
  for i = 1, #members, 1000 do
    local args = {}
    for j = i, math.min(i + 999, #members) do
      args[#args + 1] = 0
      args[#args + 1] = members[j]
    end
    redis.call('ZADD', order, unpack(args))
  end
end

local from = '-'
if after ~= '' then
  from = '(' .. after
end
while true do
  local ids = redis.call('ZRANGE', order, from, '+', 'BYLEX', 'LIMIT', 0, limit)
  if #ids == 0 then
    break
  end
  for _, job_id in ipairs(ids) do
    if taken == limit then
      result[2] = 1
      redis.call('EXPIRE', order, tonumber(ARGV[6]))
      return result
    end
    if not take(job_id) then
      redis.call('ZREM', order, job_id)
    end
    from = '(' .. job_id
  end
end
-- The last page: the order has served its snapshot.
redis.call('DEL', order)
return result
