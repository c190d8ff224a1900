-- Counts one event against a sliding-window limit, atomically. The events of
-- the last window are kept by time, so no span of one window ever holds more
-- than the limit (a fixed window lets twice the limit through across its
-- boundary). A refused event is not counted: asking again does not push the
-- next allowed time further away.
--
-- KEYS: the subject's sorted set (member: a unique id, score: time in ms)
-- ARGV: now (ms), window (ms), limit, a unique member
-- Returns 0 when the event is counted, else the ms until one is allowed.
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  -- The event whose leaving the window brings the count under the limit.
  local freeing = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  return math.max(1, tonumber(freeing[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 0
