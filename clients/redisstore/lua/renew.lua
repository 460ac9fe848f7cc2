-- Extend a lease if it still holds the lock.
-- KEYS[1] lock  KEYS[2] the lease's run record
-- ARGV[1] request id  ARGV[2] token  ARGV[3] ttl ms
-- Returns 1 renewed | 0 lock lost (held under another token) | -1 vanished: the lock is gone
-- (expired, or Redis lost its data), or another request holds it while this run's record is gone
-- (Redis lost its data and someone took the free lock).
local v = redis.call("HMGET", KEYS[1], "request", "token")
if v[1] == ARGV[1] and tonumber(v[2]) == tonumber(ARGV[2]) then
  redis.call("PEXPIRE", KEYS[1], ARGV[3])
  return 1
end
if not v[1] or (v[1] ~= ARGV[1] and redis.call("EXISTS", KEYS[2]) == 0) then
  return -1
end
return 0
