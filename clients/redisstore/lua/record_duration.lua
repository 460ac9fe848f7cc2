-- Add a finished job's duration to its (target, shape) history, newest first, bounded.
-- KEYS[1] durations (list of whole milliseconds, newest first): <prefix>{<target>}:dur:<shape>
-- ARGV[1] duration ms  ARGV[2] most entries kept  ARGV[3] expiry ms after this write (0 = none)
-- The body needs nothing but its key and these three arguments, so it can be folded into another
-- script of the target (the run's finish) by appending the key and the arguments to that script's.
-- Returns the number of entries kept.
-- LPUSH answers the length: the trim runs only when it is over the bound, and LLEN is not needed.
local n = redis.call("LPUSH", KEYS[1], ARGV[1])
local most = tonumber(ARGV[2])
if most > 0 and n > most then
  redis.call("LTRIM", KEYS[1], 0, most - 1)
  n = most
end
if tonumber(ARGV[3]) > 0 then
  redis.call("PEXPIRE", KEYS[1], ARGV[3])
end
return n
