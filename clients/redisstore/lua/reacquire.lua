-- Take the lock again for a lease that found it vanished (expired under a paused driver, or
-- Redis lost its data), unless someone else drove the run or holds the target meanwhile.
-- KEYS[1] lock  KEYS[2] fence  KEYS[3] the lease's run record  KEYS[4] queue  KEYS[5] queue deadlines
-- ARGV[1] request id  ARGV[2] the lease's token  ARGV[3] ttl ms
-- Returns {1, token} taken with a new token | {0, holder} another request holds the lock |
--         {3, ""} lost: another driver of this request holds the lock or wrote the run record.
local req, old = ARGV[1], tonumber(ARGV[2])
local v = redis.call("HMGET", KEYS[1], "request", "token")
if v[1] and v[1] ~= req then
  return {0, v[1]}
end
if v[1] and tonumber(v[2]) ~= old then
  return {3, ""}
end
local stored = redis.call("HGET", KEYS[3], "token")
if stored and tonumber(stored) ~= old then
  return {3, ""}
end
-- As in acquire.lua: a missing fence starts from Redis' clock in microseconds.
-- INCR answers 1 only on a missing counter (a live one is far past 1): then seed and INCR again,
-- which spares an EXISTS on every grant.
local token = redis.call("INCR", KEYS[2])
if token == 1 then
  local now = redis.call("TIME")
  redis.call("SET", KEYS[2], string.format("%d", tonumber(now[1]) * 1000000 + tonumber(now[2])))
  token = redis.call("INCR", KEYS[2])
end
if v[1] then -- the lease's own lock goes whole (a free lock has no key)
  redis.call("DEL", KEYS[1])
end
redis.call("HSET", KEYS[1], "request", req, "token", string.format("%d", token))
redis.call("PEXPIRE", KEYS[1], ARGV[3])
-- A ticket and its deadline come and go together (as in acquire.lua).
if redis.call("ZREM", KEYS[4], req) == 1 then
  redis.call("HDEL", KEYS[5], req)
end
return {1, token}
