-- Free the lock if the lease still holds it, and drop the request's queue ticket.
-- Announce either (PUBLISH ARGV[3] ARGV[4]): a queued request waiting for the target's lock
-- tries again at once instead of after queueRetry.
-- KEYS[1] lock  KEYS[2] queue  KEYS[3] queue deadlines
-- ARGV[1] request id  ARGV[2] token  ARGV[3] release channel
-- ARGV[4] target (the announcement's message)
-- Returns 1 released | 0 nothing to release.
local released = 0
local v = redis.call("HMGET", KEYS[1], "request", "token")
if v[1] == ARGV[1] and tonumber(v[2]) == tonumber(ARGV[2]) then
  redis.call("DEL", KEYS[1])
  released = 1
end
-- A ticket and its deadline come and go together (as in acquire.lua).
local dropped = redis.call("ZREM", KEYS[2], ARGV[1])
if dropped == 1 then
  redis.call("HDEL", KEYS[3], ARGV[1])
end
if released == 1 or dropped == 1 then
  redis.call("PUBLISH", ARGV[3], ARGV[4])
end
return released
