-- retry.lua: put a held job back on the queue it came from, re-encoded, now or later.
--
-- KEYS[1]  <w>:jobs      the worker's list
-- KEYS[2]  job:<id>      the job's data
-- KEYS[3]  qw:origin     held job id -> manager it was taken for ('' = shared queue)
-- KEYS[4]  all:jobs      the shared queue (also where a job without origin goes)
-- KEYS[5]  qw:wake:all   its wake list
-- KEYS[6]  qw:delayed    retried jobs by due time
-- ARGV[1]  the job id
-- ARGV[2]  delay in seconds (0: queue it now)
-- ARGV[3]  the job's new marker (qw:job:<id>)
-- ARGV[4]  n, the number of fields; ARGV[5..] the n field/value pairs of the new hash
--
-- Only if LREM removed the id from KEYS[1]: replace KEYS[2] and the marker, then either LPUSH the id
-- onto its origin queue (the back of the line; one wake-up token) and drop its origin
-- entry, or ZADD it to KEYS[6] at server time + delay, keeping the origin entry for
-- take.lua to promote it by, and push one wake-up token for its queue (a blocked taker
-- learns the new due time, as in queue_delayed.lua). Returns 1 if retried, 0 if the
-- worker no longer held it.

expect(KEYS[1], 'list')
expect(KEYS[3], 'hash')
expect(KEYS[6], 'zset')
local id = ARGV[1]
if redis.call('LREM', KEYS[1], -1, id) == 0 then return 0 end
if has_suspects() then redis.call('SREM', SUSPECTS, id) end  -- it ran and raised: no crash
store_job(id, ARGV, 5, tonumber(ARGV[4]), ARGV[3], false)
local delay = tonumber(ARGV[2])
if delay > 0 then
  redis.call('ZADD', KEYS[6], now() + delay, id)
  local m = redis.call('HGET', KEYS[3], id)
  wake((not m or m == SHARED_ORIGIN) and KEYS[5] or wake_key(m), 1)
else
  local wakes = {}
  put_back(id, KEYS[3], KEYS[4], KEYS[5], false, wakes)
  flush_wakes(wakes)
end
return 1
