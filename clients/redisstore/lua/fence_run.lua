-- Is the lease the lock's, and was the run record written under no later token? The fence of
-- every write of a run record (save_run.lua, finish.lua).
-- KEYS[1] lock  KEYS[2] run (hash: token, run)
-- ARGV[1] request id  ARGV[2] token
-- Returns 1 fenced in | 0 lock lost (lease stale, or a later token already wrote the record) |
-- -1 vanished (the lock is gone, or another request holds it while this record is gone).
local token = tonumber(ARGV[2])
local v = redis.call("HMGET", KEYS[1], "request", "token")
if v[1] ~= ARGV[1] or tonumber(v[2]) ~= token then
  if not v[1] or (v[1] ~= ARGV[1] and redis.call("EXISTS", KEYS[2]) == 0) then
    return -1
  end
  return 0
end
-- A record written under a later token than the lock's: another driver wrote it (or Redis lost
-- the lock and fence but not the record). Either way this lease must not overwrite it.
if tonumber(redis.call("HGET", KEYS[2], "token") or "0") > token then
  return 0
end
return 1
