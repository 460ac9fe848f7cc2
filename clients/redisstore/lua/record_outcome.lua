-- Write the terminal record of a request that never ran (refused: conflict, queue timeout),
-- only if the request has no record yet. No lock is involved: nobody drives such a request.
-- KEYS[1] run (hash: token, run)  KEYS[2] runs index (zset: request -> expiry unix ms)
-- ARGV[1] request id  ARGV[2] record JSON  ARGV[3] retention ms (0 = keep forever)
-- ARGV[4] index score (expiry unix ms or "+inf")  ARGV[5] now unix ms
-- Returns 1 written | 0 a record exists already.
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
redis.call("HSET", KEYS[1], "token", "0", "run", ARGV[2], "done", "1")
if tonumber(ARGV[3]) > 0 then
  redis.call("PEXPIRE", KEYS[1], ARGV[3])
end
redis.call("ZADD", KEYS[2], ARGV[4], ARGV[1])
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", "(" .. ARGV[5])
return 1
