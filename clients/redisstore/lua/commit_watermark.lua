-- Move a watermark forward (never backwards), fenced by the lease token.
-- KEYS[1] lock  KEYS[2] watermarks (hash: key -> unix ms)  KEYS[3] the lease's run record
-- ARGV[1] request id  ARGV[2] token  ARGV[3] watermark key  ARGV[4] watermark unix ms
-- Returns 1 committed (or kept a later stored value) | 0 lock lost | -1 vanished (the lock is
-- gone, or another request holds it while the run's record is gone).
local v = redis.call("HMGET", KEYS[1], "request", "token")
if v[1] ~= ARGV[1] or tonumber(v[2]) ~= tonumber(ARGV[2]) then
  if not v[1] or (v[1] ~= ARGV[1] and redis.call("EXISTS", KEYS[3]) == 0) then
    return -1
  end
  return 0
end
local cur = tonumber(redis.call("HGET", KEYS[2], ARGV[3]) or "")
if not cur or cur < tonumber(ARGV[4]) then
  redis.call("HSET", KEYS[2], ARGV[3], ARGV[4])
end
return 1
