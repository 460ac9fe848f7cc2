-- Begin a run in one round trip: tell a finished request, else take the target's lock
-- (acquire.lua, run as the function acquire on KEYS[1..4] and ARGV[1..7]) and, once granted, read
-- what the run starts from. Reads in the same script after the grant see exactly what fenced
-- writers left: no stale lease can write between them.
-- KEYS[1..4] as acquire.lua  KEYS[5] the request's run record  KEYS[6] watermarks
-- KEYS[7] undeleted jobs
-- ARGV[1..7] as acquire.lua  ARGV[8] watermark key ("" = none)
-- ARGV[9] how many undeleted jobs to read, oldest first (0 = none)
-- Returns {4, record JSON}: the request's run is finished (field done), nothing taken |
--         acquire.lua's reply when not granted |
--         {1, token, record JSON or false, watermark unix ms or false, {undeleted status URLs}}.
if redis.call("HGET", KEYS[5], "done") == "1" then
  return {4, redis.call("HGET", KEYS[5], "run")}
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
return {1, granted[2], redis.call("HGET", KEYS[5], "run"), wm, undeleted}
