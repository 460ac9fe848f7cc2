-- Let a finished run's target go, in one round trip: drop the job the run DELETEd from the job
-- registry (a fact about Pathling, whoever holds the lock), free the lock if the lease still
-- holds it, drop the request's queue ticket, and tell the replicas waiting for the target.
-- KEYS[1] lock  KEYS[2] queue  KEYS[3] queue deadlines  KEYS[4] jobs  KEYS[5] undeleted jobs
-- ARGV[1] request id  ARGV[2] token  ARGV[3] status URL to forget ("" = none)
-- ARGV[4] release notification channel  ARGV[5] target
-- Returns 1 released | 0 nothing to release.
if ARGV[3] ~= "" then
  redis.call("ZREM", KEYS[4], ARGV[3])
  redis.call("ZREM", KEYS[5], ARGV[3])
end
local released = 0
local v = redis.call("HMGET", KEYS[1], "request", "token")
if v[1] == ARGV[1] and tonumber(v[2]) == tonumber(ARGV[2]) then
  redis.call("DEL", KEYS[1])
  redis.call("PUBLISH", ARGV[4], ARGV[5])
  released = 1
end
-- A ticket and its deadline come and go together (as in acquire.lua).
if redis.call("ZREM", KEYS[2], ARGV[1]) == 1 then
  redis.call("HDEL", KEYS[3], ARGV[1])
end
return released
