-- purge_failed.lua: delete jobs from the failed-job registry.
--
-- KEYS[1]  qw:failed    failed ids by time
-- ARGV     the ids to delete
--
-- For each id that ZREM removes from KEYS[1]: DEL qw:failed:<id> and qw:invalid:<id>
-- (built with the prelude's key functions). Ids not in the registry are left alone.
-- Returns: how many were deleted.

expect(KEYS[1], 'zset')
local count = 0
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], id) > 0 then
    redis.call('DEL', failed_key(id), invalid_key(id))
    count = count + 1
  end
end
return count
