-- purge_failed_upto.lua: delete the oldest failed jobs, up to a time.
--
-- KEYS[1]  qw:failed              failed ids by time
-- KEYS[2]  qw:producer:<token>    the calling producer's last call (see replayed())
-- ARGV[1]  the number of this call among the producer's
-- ARGV[2]  the latest failure time to delete (a score of KEYS[1])
-- ARGV[3]  the most entries to delete
--
-- Deletes up to ARGV[3] entries of KEYS[1] with a score up to ARGV[2], oldest first, each
-- with its qw:failed:<id> and qw:invalid:<id> (built with the prelude's key functions).
-- A call that ran already (the same producer and number) changes nothing and answers as
-- the first did (else a re-sent call would delete the next batch and miscount).
-- Returns: how many were deleted.

local again = replayed(KEYS[2], ARGV[1])
if again then return again end
expect(KEYS[1], 'zset')
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('DEL', failed_key(id), invalid_key(id))
end
call_chunked('ZREM', KEYS[1], ids, 1, #ids)
return remember(KEYS[2], ARGV[1], #ids)
