-- Extend a lease if it still holds the lock.
-- KEYS[1] lock  ARGV[1] request id  ARGV[2] token  ARGV[3] ttl ms
-- Returns 1 renewed | 0 lock lost.
local v = redis.call("HMGET", KEYS[1], "request", "token")
if v[1] == ARGV[1] and tonumber(v[2]) == tonumber(ARGV[2]) then
  redis.call("PEXPIRE", KEYS[1], ARGV[3])
  return 1
end
return 0
