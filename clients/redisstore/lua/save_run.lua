-- Write a run record, fenced by the lease token.
-- KEYS[1] lock  KEYS[2] run (hash: token, run)  KEYS[3] runs index (zset: request -> expiry unix ms)
-- ARGV[1] request id  ARGV[2] token  ARGV[3] record JSON  ARGV[4] retention ms (0 = keep forever)
-- ARGV[5] index score (expiry unix ms or "+inf")  ARGV[6] now unix ms
-- ARGV[7] "1" when the record is terminal: the field done = 1 lets begin.lua tell a finished
--         request without decoding the record
-- Returns 1 written | 0 lock lost (lease stale, or a later token already wrote the record) |
-- -1 vanished (the lock is gone, or another request holds it while this record is gone).
local token = tonumber(ARGV[2])
local v = redis.call("HMGET", KEYS[1], "request", "token")
if v[1] ~= ARGV[1] or tonumber(v[2]) ~= token then
  if not v[1] or (v[1] ~= ARGV[1] and redis.call("EXISTS", KEYS[2]) == 0) then
    return -1
  end
  return 0
end
-- A record written under a later token than the lock's: another driver wrote it (or Redis lost
-- the lock and fence but not the record). Either way this lease must not overwrite it.
local stored = tonumber(redis.call("HGET", KEYS[2], "token") or "0")
if stored > token then
  return 0
end
redis.call("HSET", KEYS[2], "token", ARGV[2], "run", ARGV[3])
if ARGV[7] == "1" then
  redis.call("HSET", KEYS[2], "done", "1")
end
if tonumber(ARGV[4]) > 0 then
  redis.call("PEXPIRE", KEYS[2], ARGV[4])
else
  redis.call("PERSIST", KEYS[2])
end
redis.call("ZADD", KEYS[3], ARGV[5], ARGV[1])
-- Forget index entries whose records have expired by now.
redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", "(" .. ARGV[6])
return 1
