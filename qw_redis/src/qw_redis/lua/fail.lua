-- fail.lua: move held jobs to the failed-job registry, guarded, then trim the registry.
--
-- KEYS[1]  <w>:jobs          the worker's list
-- KEYS[2]  qw:failed         failed ids by time
-- KEYS[3]  qw:origin         held job id -> manager it was taken for
-- ARGV[1]  the registry's maximum age in seconds, or '' for none
-- ARGV[2]  the registry's maximum number of entries, or '' for none
-- ARGV[3..] per job, four values: its id; its record (JSON); its failure (JSON); '1' to
--          keep the job's hash as it is under qw:invalid:<id> (it could not be read), its
--          marker folded in (see keep_job in common.lua), or '0' to delete both (the
--          record has its data)
--
-- For each job, only if LREM removed its id from KEYS[1] (the worker still held it):
-- write qw:failed:<id> (job, failure, and the origin entry moved from KEYS[3], or for a
-- job without one, its worker's home: home_of in common.lua), ZADD
-- KEYS[2], delete or keep job:<id>, and delete the unique key it holds (see
-- release_unique in common.lua). The entry's score is the server's time (TIME), so
-- the age bound does not depend on the clock of whichever host failed the job, plus a
-- microsecond per job before it in the call, so the registry lists them in order. Then trim
-- the registry once: entries that failed more than ARGV[1] seconds before now, then the
-- oldest beyond ARGV[2] (the new ones count), at most TRIM_BATCH each, lose their zset
-- entry, qw:failed:<id> and qw:invalid:<id> (built with the prelude's key functions).
-- Returns a list of 1/0 per job: 1 if it was failed, 0 if the worker no longer held it.

expect(KEYS[1], 'list')
expect(KEYS[2], 'zset')
expect(KEYS[3], 'hash')
expect(MANAGER_OF, 'hash')
expect(RECOVERIES, 'hash')
local suspects = has_suspects()
local uniques = has_uniques()
local at = now()
local done = {}
for i = 3, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('LREM', KEYS[1], -1, id) == 0 then
    done[#done + 1] = 0
  else
    redis.call('HDEL', RECOVERIES, id)  -- its crash count (prelude constant): it has ended
    if suspects then redis.call('SREM', SUSPECTS, id) end
    local from = redis.call('HGET', KEYS[3], id) or home_of(KEYS[1])
    redis.call('HDEL', KEYS[3], id)
    redis.call('DEL', failed_key(id), invalid_key(id))
    redis.call('HSET', failed_key(id), 'job', ARGV[i + 1], 'failure', ARGV[i + 2], 'origin', from)
    if ARGV[i + 3] == '1' then
      keep_job(id)
    else
      drop_job(id)
    end
    if uniques then release_unique(id) end  -- failed for good: its unique key is free
    redis.call('ZADD', KEYS[2], at + #done / 1000000, id)  -- a microsecond apart: in order
    done[#done + 1] = 1
  end
end

local TRIM_BATCH = 1000
local function drop(ids)
  for _, old in ipairs(ids) do
    redis.call('ZREM', KEYS[2], old)
    redis.call('DEL', failed_key(old), invalid_key(old))
  end
end
if ARGV[1] ~= '' then
  local cutoff = at - tonumber(ARGV[1])
  drop(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. cutoff, 'LIMIT', 0, TRIM_BATCH))
end
if ARGV[2] ~= '' then
  local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
  if excess > 0 then drop(redis.call('ZRANGE', KEYS[2], 0, math.min(excess, TRIM_BATCH) - 1)) end
end
return done
