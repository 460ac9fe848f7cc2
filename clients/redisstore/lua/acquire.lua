-- Acquire a target's lock with a new fencing token.
-- KEYS[1] lock (hash: request, token)   KEYS[2] fence (INCR counter)
-- KEYS[3] queue (zset: request -> seq)  KEYS[4] queue deadlines (hash: request -> unix ms, 0 = none)
-- ARGV[1] request id  ARGV[2] ttl ms  ARGV[3] "1" when queued  ARGV[4] seq
-- ARGV[5] ticket deadline unix ms (0 = none)  ARGV[6] now unix ms
-- ARGV[7] "1": settle: a NEW ticket only takes its place (reply "not your turn"), so that
--         requests delivered together all hold their places before the head is served
-- Returns {1, token} granted | {0, holder} held by another request | {2, head} not your turn.
local req = ARGV[1]
local queued = ARGV[3] == "1"
local head = nil -- the queue's head once expired tickets are dropped

if queued then
  -- NX: a redelivery keeps its original place.
  local added = redis.call("ZADD", KEYS[3], "NX", ARGV[4], req)
  redis.call("HSET", KEYS[4], req, ARGV[5])
  if added == 1 and ARGV[7] == "1" then
    return {2, req}
  end
  -- Drop expired tickets at the head (never the caller's own: it decides on its timeout).
  local now = tonumber(ARGV[6])
  while true do
    head = redis.call("ZRANGE", KEYS[3], 0, 0)[1]
    if not head or head == req then break end
    local dl = tonumber(redis.call("HGET", KEYS[4], head) or "-1") -- no deadline entry: orphan, drop
    if dl == 0 or dl > now then break end
    redis.call("ZREM", KEYS[3], head)
    redis.call("HDEL", KEYS[4], head)
  end
end

local holder = redis.call("HGET", KEYS[1], "request")
if holder and holder ~= req then
  return {0, holder}
end
-- The head read above is still the head: nothing touched the queue since.
if queued and not holder and head and head ~= req then
  return {2, head}
end

-- Granted (fresh, or a takeover by the same request): the fence only moves on a grant.
-- A missing fence (a new target, or a Redis that lost its data) starts from Redis' clock in
-- microseconds, so that tokens keep growing across a data loss and never repeat.
-- INCR answers 1 only on a missing counter (a live one is far past 1): then seed and INCR again,
-- which spares an EXISTS on every grant.
local token = redis.call("INCR", KEYS[2])
if token == 1 then
  local now = redis.call("TIME")
  redis.call("SET", KEYS[2], string.format("%d", tonumber(now[1]) * 1000000 + tonumber(now[2])))
  token = redis.call("INCR", KEYS[2])
end
if holder then -- a takeover: the old lock goes whole (a free lock has no key)
  redis.call("DEL", KEYS[1])
end
redis.call("HSET", KEYS[1], "request", req, "token", string.format("%d", token))
redis.call("PEXPIRE", KEYS[1], ARGV[2])
-- A ticket and its deadline come and go together (here, release*.lua, reacquire.lua): no ticket,
-- no deadline to drop.
if redis.call("ZREM", KEYS[3], req) == 1 then
  redis.call("HDEL", KEYS[4], req)
end
return {1, token}
