-- retry.lua: put a held job back on the queue it came from, re-encoded, now or later.
--
-- KEYS[1]  <w>:jobs      the worker's list
-- KEYS[2]  job:<id>      the job's data
-- KEYS[3]  qw:origin     held job id -> manager it was taken for ('' = shared queue)
-- KEYS[4]  qw:due        queues with delayed jobs, by their soonest due time
-- ARGV[1]  the job id
-- ARGV[2]  delay in seconds (0: queue it now)
-- ARGV[3]  the job's new marker (qw:job:<id>)
-- ARGV[4]  n, the number of fields; ARGV[5..] the n field/value pairs of the new hash
--
-- Only if LREM removed the id from KEYS[1]: replace KEYS[2] and the marker, then either LPUSH the id
-- onto its origin queue (the back of the line; one wake-up token) and drop its origin
-- entry, or (delay_jobs in common.lua) add it to its origin queue's delayed set at server
-- time + delay, drop its origin entry, and push one wake-up token for its queue (a blocked
-- taker learns the new due time, as in queue_delayed.lua). A job without an origin entry
-- goes to its worker's home (home_of in common.lua). Returns 1 if retried, 0 if the
-- worker no longer held it.

expect(KEYS[1], 'list')
expect(KEYS[3], 'hash')
expect(MANAGER_OF, 'hash')
local id = ARGV[1]
local delay = tonumber(ARGV[2])
local m = redis.call('HGET', KEYS[3], id) or home_of(KEYS[1])
if delay > 0 then
  expect(KEYS[4], 'zset')
  expect(delayed_key(m), 'zset')
end
if redis.call('LREM', KEYS[1], -1, id) == 0 then return 0 end
if has_suspects() then redis.call('SREM', SUSPECTS, id) end  -- it ran and raised: no crash
store_job(id, ARGV, 5, tonumber(ARGV[4]), ARGV[3], false)
if delay > 0 then
  redis.call('HDEL', KEYS[3], id)
  delay_jobs(m, {id}, {now() + delay}, 1)
  local _, wkey = queue_of(m)
  wake(wkey, 1)
else
  local wakes = {}
  put_back(id, KEYS[3], KEYS[1], false, wakes)
  flush_wakes(wakes)
end
return 1
