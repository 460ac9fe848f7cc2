-- Begin a run in one round trip: tell a finished request, else take the target's lock
-- (acquire.lua, run as the function acquire on KEYS[1..4] and ARGV[1..7]) and, once granted, read
-- what the run starts from. Reads in the same script after the grant see exactly what fenced
-- writers left: no stale lease can write between them.
-- KEYS[1..4] as acquire.lua  KEYS[5] the request's run record  KEYS[6] watermarks
-- KEYS[7] undeleted jobs  KEYS[8] runs index
-- ARGV[1..7] as acquire.lua  ARGV[8] watermark key ("" = none)
-- ARGV[9] how many undeleted jobs to read, oldest first (0 = none)
-- ARGV[10] a new run's record JSON, written when the request has none ("" = none); its first
--          "token":-1, becomes the granted token  ARGV[11] retention ms (0 = keep forever)
-- ARGV[12] index score (expiry unix ms or "+inf")  ARGV[13] now unix ms
-- ARGV[14] "1": the new run's since is "auto": the watermark read here is its since, kept in
--          the record's field since (readers apply it until a full write carries it)
-- Returns {4, record JSON}: the request's run is finished (field done), nothing taken |
--         acquire.lua's reply when not granted |
--         {1, token, record JSON or false, watermark unix ms or false, {undeleted status URLs},
--          1 when ARGV[10] was written (the record returned is then false) else 0,
--          the record's field since or false}.
-- One read of the record serves both the finished check and, after the grant, the run: acquire
-- writes none of the record's key, and nothing else runs between (a script is atomic).
local stored = redis.call("HMGET", KEYS[5], "done", "run", "since")
if stored[1] == "1" then
  return {4, stored[2]}
end
local granted = acquire(KEYS, ARGV)
if granted[1] ~= 1 then
  return granted
end
local wm = false
if ARGV[8] ~= "" then
  wm = redis.call("HGET", KEYS[6], ARGV[8])
end
local undeleted = {}
local n = tonumber(ARGV[9])
if n > 0 then
  undeleted = redis.call("ZRANGE", KEYS[7], 0, n - 1)
end
if stored[2] or ARGV[10] == "" then
  return {1, granted[2], stored[2], wm, undeleted, 0, stored[3]}
end
-- A new run: its record, written under the new token (as save_run.lua would).
local token = string.format("%d", granted[2])
local i, j = string.find(ARGV[10], '"token":-1,', 1, true)
if not i then
  return redis.error_reply("begin: the new record has no \"token\":-1, placeholder")
end
local rec = string.sub(ARGV[10], 1, i - 1) .. '"token":' .. token .. ',' .. string.sub(ARGV[10], j + 1)
if ARGV[14] == "1" and wm then
  redis.call("HSET", KEYS[5], "token", token, "run", rec, "since", wm)
else
  redis.call("HSET", KEYS[5], "token", token, "run", rec)
end
if tonumber(ARGV[11]) > 0 then
  redis.call("PEXPIRE", KEYS[5], ARGV[11])
end
-- As write_run.lua: the index is swept of expired entries when it gains one.
if redis.call("ZADD", KEYS[8], ARGV[12], ARGV[1]) == 1 then
  redis.call("ZREMRANGEBYSCORE", KEYS[8], "-inf", "(" .. ARGV[13])
end
return {1, granted[2], false, wm, undeleted, 1, false}
