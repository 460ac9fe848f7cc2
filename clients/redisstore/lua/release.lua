-- Free the lock if the lease still holds it, and drop the request's queue ticket.
-- KEYS[1] lock  KEYS[2] queue  KEYS[3] queue deadlines
-- ARGV[1] request id  ARGV[2] token
-- Returns 1 released | 0 nothing to release.
local released = 0
local v = redis.call("HMGET", KEYS[1], "request", "token")
if v[1] == ARGV[1] and tonumber(v[2]) == tonumber(ARGV[2]) then
  redis.call("DEL", KEYS[1])
  released = 1
end
redis.call("ZREM", KEYS[2], ARGV[1])
redis.call("HDEL", KEYS[3], ARGV[1])
return released
