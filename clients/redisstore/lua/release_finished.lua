-- Free the lock if it is held by a request whose run is terminal (any token),
-- and drop that request's queue ticket. Announce either as release.lua does.
-- KEYS[1] lock  KEYS[2] queue  KEYS[3] queue deadlines
-- ARGV[1] request id  ARGV[2] release channel  ARGV[3] target
-- Returns 1 released | 0 nothing to release.
local released = 0
if redis.call("HGET", KEYS[1], "request") == ARGV[1] then
  redis.call("DEL", KEYS[1])
  released = 1
end
-- A ticket and its deadline come and go together (as in acquire.lua).
local dropped = redis.call("ZREM", KEYS[2], ARGV[1])
if dropped == 1 then
  redis.call("HDEL", KEYS[3], ARGV[1])
end
if released == 1 or dropped == 1 then
  redis.call("PUBLISH", ARGV[2], ARGV[3])
end
return released
