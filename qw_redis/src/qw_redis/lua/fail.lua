-- fail.lua: move a held job to the failed-job registry, guarded.
--
-- KEYS[1]  <w>:jobs          the worker's list
-- KEYS[2]  job:<id>          the job's data
-- KEYS[3]  qw:failed         failed ids by time
-- KEYS[4]  qw:failed:<id>    the failed job's entry
-- KEYS[5]  qw:origin         held job id -> manager it was taken for
-- KEYS[6]  qw:invalid:<id>   where an unreadable job's hash is kept
-- ARGV[1]  the job id
-- ARGV[2]  the job record (JSON)
-- ARGV[3]  the failure (JSON)
-- ARGV[4]  1: keep the job's hash as it is under KEYS[6] (it could not be read), its
--          marker folded in (see keep_job in common.lua); 0: delete both (the record in
--          ARGV[2] has its data)
-- ARGV[5]  the registry's maximum age in seconds, or '' for none
-- ARGV[6]  the registry's maximum number of entries, or '' for none
--
-- Only if LREM removed the id from KEYS[1] (the worker still held it): write KEYS[4]
-- (job, failure, and the origin entry moved from KEYS[5]), ZADD KEYS[3], and delete or
-- keep KEYS[2]. The entry's score is the server's time (TIME), so the age bound does not
-- depend on the clock of whichever host failed the job. Then trim the registry: entries
-- that failed more than ARGV[5] seconds before now, then the oldest beyond ARGV[6] (the
-- new one counts), at most TRIM_BATCH each, lose their zset entry, qw:failed:<id> and
-- qw:invalid:<id> (built with the prelude's key functions). Returns 1 if the job was
-- failed, 0 if the worker no longer held it.

expect(KEYS[1], 'list')
expect(KEYS[3], 'zset')
expect(KEYS[5], 'hash')
expect(RECOVERIES, 'hash')
local id = ARGV[1]
if redis.call('LREM', KEYS[1], -1, id) == 0 then return 0 end
redis.call('HDEL', RECOVERIES, id)  -- its crash count (prelude constant): it has ended
if has_suspects() then redis.call('SREM', SUSPECTS, id) end
local from = redis.call('HGET', KEYS[5], id)
redis.call('HDEL', KEYS[5], id)
redis.call('DEL', KEYS[4], KEYS[6])
redis.call('HSET', KEYS[4], 'job', ARGV[2], 'failure', ARGV[3])
if from then redis.call('HSET', KEYS[4], 'origin', from) end
if ARGV[4] == '1' then
  keep_job(id)
else
  drop_job(id)
end
local at = now()
redis.call('ZADD', KEYS[3], at, id)

local TRIM_BATCH = 1000
local function drop(ids)
  for _, old in ipairs(ids) do
    redis.call('ZREM', KEYS[3], old)
    redis.call('DEL', failed_key(old), invalid_key(old))
  end
end
if ARGV[5] ~= '' then
  local cutoff = at - tonumber(ARGV[5])
  drop(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. cutoff, 'LIMIT', 0, TRIM_BATCH))
end
if ARGV[6] ~= '' then
  local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[6])
  if excess > 0 then drop(redis.call('ZRANGE', KEYS[3], 0, math.min(excess, TRIM_BATCH) - 1)) end
end
return 1
