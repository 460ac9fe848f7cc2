-- Write a run record, fenced by the lease token (fence_run.lua, run as fenceRun; the write is
-- write_run.lua, run as writeRun).
-- KEYS[1] lock  KEYS[2] run (hash: token, run)  KEYS[3] runs index (zset: request -> expiry unix ms)
-- ARGV[1] request id  ARGV[2] token  ARGV[3] record JSON  ARGV[4] retention ms (0 = keep forever)
-- ARGV[5] index score (expiry unix ms or "+inf")  ARGV[6] now unix ms
-- ARGV[7] "1" when the record is terminal: the field done = 1 lets begin.lua tell a finished
--         request without decoding the record
-- Returns 1 written | 0 lock lost (lease stale, or a later token already wrote the record) |
-- -1 vanished (the lock is gone, or another request holds it while this record is gone).
local fenced = fenceRun({KEYS[1], KEYS[2]}, {ARGV[1], ARGV[2]})
if fenced ~= 1 then
  return fenced
end
writeRun({KEYS[2], KEYS[3]}, ARGV)
return 1
