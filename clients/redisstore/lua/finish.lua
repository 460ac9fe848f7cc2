-- Write a run's end, fenced by the lease token, in one round trip: record its job when the run
-- has not yet (record_job.lua, run as recordJob: a fact about Pathling, whoever holds the lock),
-- commit the watermark (never backwards), write the terminal record holding the outcome
-- (fence_run.lua and write_run.lua, run as fenceRun and writeRun), and add
-- an optional duration sample (record_duration.lua, run as recordDuration). The lock stays: the
-- run DELETEs its job before it lets the target go (release_run.lua).
-- KEYS[1] lock  KEYS[2] run  KEYS[3] runs index  KEYS[4] watermarks  KEYS[5] jobs
-- KEYS[6] durations (optional)
-- ARGV[1] request id  ARGV[2] token  ARGV[3] record JSON  ARGV[4] retention ms (0 = forever)
-- ARGV[5] index score (expiry unix ms or "+inf")  ARGV[6] now unix ms
-- ARGV[7] watermark key ("" = watermarks untouched)
-- ARGV[8] the stored watermark the caller decided on (unix ms, "" = none stored)
-- ARGV[9] watermark to commit (unix ms, "" = none: the run does not move it)
-- ARGV[10..13] record_job.lua's ARGV (status URL, the run's first kick-off unix ms, cutoff,
--              most entries), ARGV[10] "" = the job is recorded already
-- ARGV[14..16] with KEYS[6]: record_duration.lua's ARGV[1..3]
-- Returns {1, ""} written | {0, ""} lock lost | {-1, ""} vanished (as save_run.lua) |
--         {2, stored watermark or false}: the stored watermark is not ARGV[8] |
--         {3, earliest}: the job was kicked off before the run (Pathling handed back an earlier
--         job): its time is the watermark base. Nothing but the job's record is written on 2, 3.
if ARGV[10] ~= "" then
  local t = recordJob({KEYS[5]}, {ARGV[10], ARGV[11], ARGV[12], ARGV[13]})
  if t < tonumber(ARGV[11]) then
    return {3, t}
  end
end
local fenced = fenceRun({KEYS[1], KEYS[2]}, {ARGV[1], ARGV[2]})
if fenced ~= 1 then
  return {fenced, ""}
end
if ARGV[7] ~= "" then
  local cur = redis.call("HGET", KEYS[4], ARGV[7])
  if (cur or "") ~= ARGV[8] then
    return {2, cur}
  end
  if ARGV[9] ~= "" and (not cur or tonumber(cur) < tonumber(ARGV[9])) then
    redis.call("HSET", KEYS[4], ARGV[7], ARGV[9])
  end
end
writeRun({KEYS[2], KEYS[3]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], "1"})
if KEYS[6] then
  recordDuration({KEYS[6]}, {ARGV[14], ARGV[15], ARGV[16]})
end
return {1, ""}
