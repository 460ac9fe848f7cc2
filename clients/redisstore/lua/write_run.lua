-- Write a run record and its index entry, once fenced in (fence_run.lua).
-- KEYS[1] run (hash: token, run)  KEYS[2] runs index (zset: request -> expiry unix ms)
-- ARGV[1] request id  ARGV[2] token  ARGV[3] record JSON  ARGV[4] retention ms (0 = keep forever)
-- ARGV[5] index score (expiry unix ms or "+inf")  ARGV[6] now unix ms
-- ARGV[7] "1" when the record is terminal: the field done = 1 lets begin.lua tell a finished
--         request without decoding the record
redis.call("HSET", KEYS[1], "token", ARGV[2], "run", ARGV[3])
if ARGV[7] == "1" then
  redis.call("HSET", KEYS[1], "done", "1")
end
if tonumber(ARGV[4]) > 0 then
  redis.call("PEXPIRE", KEYS[1], ARGV[4])
else
  redis.call("PERSIST", KEYS[1])
end
redis.call("ZADD", KEYS[2], ARGV[5], ARGV[1])
-- Forget index entries whose records have expired by now.
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", "(" .. ARGV[6])
