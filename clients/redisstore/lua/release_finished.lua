-- Free the lock if it is held by a request whose run is terminal (any token),
-- and drop that request's queue ticket.
-- KEYS[1] lock  KEYS[2] queue  KEYS[3] queue deadlines
-- ARGV[1] request id
-- Returns 1 released | 0 nothing to release.
local released = 0
if redis.call("HGET", KEYS[1], "request") == ARGV[1] then
  redis.call("DEL", KEYS[1])
  released = 1
end
redis.call("ZREM", KEYS[2], ARGV[1])
redis.call("HDEL", KEYS[3], ARGV[1])
return released
