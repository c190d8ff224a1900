-- Gives back and takes the connection slots of many users in one step (the
-- admissions and departures of one moment in one hub process), counting
-- every hub process's connections, so that a user cannot get N x the limit
-- by spreading over N processes. Slots of processes that stopped renewing
-- their liveness key (crashed) are dropped on the way.
--
-- KEYS: the slot hash (process id -> open connections) of each user giving
--       slots back (R of them), then that of each slot wanted, in order
--       (a user may want several)
-- ARGV: this process's id, liveness key prefix, hash ttl, R, the R counts
--       given back, then the per-user limit of each slot wanted
-- Returns, for each slot wanted, the user's connections once it is taken,
-- or -1 at the limit.
local me, alive_prefix, ttl = ARGV[1], ARGV[2], ARGV[3]
local returned = tonumber(ARGV[4])
for i = 1, returned do
  local left = redis.call('HINCRBY', KEYS[i], me, -tonumber(ARGV[4 + i]))
  if left <= 0 then
    redis.call('HDEL', KEYS[i], me)
  end
end

local alive = {}
local totals = {}
local taken = {}
local answers = {}
for i = returned + 1, #KEYS do
  local key = KEYS[i]
  local total = totals[key]
  if total == nil then
    total = 0
    local slots = redis.call('HGETALL', key)
    for j = 1, #slots, 2 do
      local process, count = slots[j], tonumber(slots[j + 1])
      local up = process == me or alive[process]
      if up == nil then
        up = redis.call('EXISTS', alive_prefix .. process) == 1
        alive[process] = up
      end
      if up then
        total = total + count
      else
        redis.call('HDEL', key, process)
      end
    end
  end
  if total >= tonumber(ARGV[4 + i]) then
    answers[#answers + 1] = -1
  else
    total = total + 1
    taken[key] = (taken[key] or 0) + 1
    answers[#answers + 1] = total
  end
  totals[key] = total
end
for key, count in pairs(taken) do
  redis.call('HINCRBY', key, me, count)
  redis.call('EXPIRE', key, ttl)
end
return answers
