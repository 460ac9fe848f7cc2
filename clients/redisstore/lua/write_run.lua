-- Write a run record and its index entry, once fenced in (fence_run.lua).
-- KEYS[1] run (hash: token, run)  KEYS[2] runs index (zset: request -> expiry unix ms)
-- ARGV[1] request id  ARGV[2] token  ARGV[3] record JSON  ARGV[4] retention ms (0 = keep forever)
-- ARGV[5] index score (expiry unix ms or "+inf")  ARGV[6] now unix ms
-- ARGV[7] "1" when the record is terminal: the field done = 1 lets begin.lua tell a finished
--         request without decoding the record
if ARGV[7] == "1" then
  redis.call("HSET", KEYS[1], "token", ARGV[2], "run", ARGV[3], "done", "1")
else
  redis.call("HSET", KEYS[1], "token", ARGV[2], "run", ARGV[3])
end
if tonumber(ARGV[4]) > 0 then
  redis.call("PEXPIRE", KEYS[1], ARGV[4])
else
  redis.call("PERSIST", KEYS[1])
end
-- Forget index entries whose records have expired by now, when the index gains an entry: it
-- grows only then, so it never holds more expired entries than before the last new record
-- (readers skip entries whose record is gone), and a run's later writes (an update of its own
-- entry) spare the sweep.
if redis.call("ZADD", KEYS[2], ARGV[5], ARGV[1]) == 1 then
  redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", "(" .. ARGV[6])
end
