-- Record the kick-off time of a Pathling job; the earliest time wins.
-- KEYS[1] jobs (zset: status URL -> earliest kick-off unix ms)
-- ARGV[1] status URL  ARGV[2] kick-off unix ms  ARGV[3] drop entries kicked off before this (unix ms)
-- ARGV[4] most entries kept (the newest)
-- Returns the earliest kick-off unix ms recorded for the job.
local t = tonumber(ARGV[2])
if redis.call("ZADD", KEYS[1], "NX", ARGV[2], ARGV[1]) == 0 then
  -- Known already: the earlier time stays. The registry did not grow: no sweep, but this entry
  -- goes if it is past the cutoff, as the sweep on every call used to drop it.
  local cur = tonumber(redis.call("ZSCORE", KEYS[1], ARGV[1]))
  if cur > t then
    redis.call("ZADD", KEYS[1], t, ARGV[1])
    cur = t
  end
  if cur < tonumber(ARGV[3]) then
    redis.call("ZREM", KEYS[1], ARGV[1])
  end
  return cur
end
-- A new job: bound the registry, which grows only here.
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. ARGV[3])
redis.call("ZREMRANGEBYRANK", KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
return t
