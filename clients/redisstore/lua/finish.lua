-- Finish a run in one round trip, fenced by the lease token: forget its deleted Pathling job,
-- commit the watermark (never backwards), write the terminal record holding the outcome,
-- release the lock and drop the request's queue ticket, tell waiting replicas the target is
-- free, and add an optional duration sample (record_duration.lua, run as recordDuration).
-- KEYS[1] lock  KEYS[2] run  KEYS[3] runs index  KEYS[4] watermarks  KEYS[5] queue
-- KEYS[6] queue deadlines  KEYS[7] jobs  KEYS[8] undeleted jobs  KEYS[9] durations (optional)
-- ARGV[1] request id  ARGV[2] token  ARGV[3] record JSON  ARGV[4] retention ms (0 = forever)
-- ARGV[5] index score (expiry unix ms or "+inf")  ARGV[6] now unix ms
-- ARGV[7] watermark key ("" = watermarks untouched)
-- ARGV[8] the stored watermark the caller decided on (unix ms, "" = none stored)
-- ARGV[9] watermark to commit (unix ms, "" = none: the run does not move it)
-- ARGV[10] status URL of the deleted job to forget ("" = none)
-- ARGV[11] release notification channel  ARGV[12] target
-- ARGV[13..15] with KEYS[9]: record_duration.lua's ARGV[1..3]
-- Returns {1, ""} finished | {0, ""} lock lost | {-1, ""} vanished (as save_run.lua) |
--         {2, stored watermark or false}: the stored watermark is not ARGV[8]; nothing written.
if ARGV[10] ~= "" then
  -- A fact about Pathling (the job is gone), whoever holds the lock.
  redis.call("ZREM", KEYS[7], ARGV[10])
  redis.call("ZREM", KEYS[8], ARGV[10])
end
local token = tonumber(ARGV[2])
local v = redis.call("HMGET", KEYS[1], "request", "token")
if v[1] ~= ARGV[1] or tonumber(v[2]) ~= token then
  if not v[1] or (v[1] ~= ARGV[1] and redis.call("EXISTS", KEYS[2]) == 0) then
    return {-1, ""}
  end
  return {0, ""}
end
if tonumber(redis.call("HGET", KEYS[2], "token") or "0") > token then
  return {0, ""}
end
if ARGV[7] ~= "" then
  local cur = redis.call("HGET", KEYS[4], ARGV[7])
  if (cur or "") ~= ARGV[8] then
    return {2, cur}
  end
  if ARGV[9] ~= "" and (not cur or tonumber(cur) < tonumber(ARGV[9])) then
    redis.call("HSET", KEYS[4], ARGV[7], ARGV[9])
  end
end
redis.call("HSET", KEYS[2], "token", ARGV[2], "run", ARGV[3], "done", "1")
if tonumber(ARGV[4]) > 0 then
  redis.call("PEXPIRE", KEYS[2], ARGV[4])
else
  redis.call("PERSIST", KEYS[2])
end
redis.call("ZADD", KEYS[3], ARGV[5], ARGV[1])
redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", "(" .. ARGV[6])
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[5], ARGV[1])
redis.call("HDEL", KEYS[6], ARGV[1])
redis.call("PUBLISH", ARGV[11], ARGV[12])
if KEYS[9] then
  recordDuration({KEYS[9]}, {ARGV[13], ARGV[14], ARGV[15]})
end
return {1, ""}
