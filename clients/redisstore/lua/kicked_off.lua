-- After a kick-off, in one round trip: record the job it returned (record_job.lua, run as
-- recordJob; not fenced: it is a fact about Pathling whoever writes it) and save the run's
-- polling record (save_run.lua, run as saveRun; fenced), unless the job was kicked off before
-- the run's own kick-off: Pathling handed back an earlier job, and the record must first take
-- that job's kick-off as its watermark base.
-- KEYS[1] jobs  KEYS[2] lock  KEYS[3] run  KEYS[4] runs index
-- ARGV[1..4] as record_job.lua (ARGV[2]: the run's first kick-off)  ARGV[5..11] as save_run.lua
-- Returns {2, earliest}: job recorded, record not saved (the job is older) |
--         {save_run.lua's reply, earliest}.
local t = recordJob({KEYS[1]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4]})
if t < tonumber(ARGV[2]) then
  return {2, t}
end
return {saveRun({KEYS[2], KEYS[3], KEYS[4]}, {ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]}), t}
