-- requeue_failed.lua: move a failed job back onto the queue it came from.
--
-- KEYS[1]  qw:failed         failed ids by time
-- KEYS[2]  qw:failed:<id>    the failed job's entry (its 'origin' field says where to)
-- KEYS[3]  job:<id>          the job's data, rewritten
-- KEYS[4]  qw:invalid:<id>   an unreadable job's hash, kept as it was
-- KEYS[5]  all:jobs          the shared queue (origin '' or none)
-- KEYS[6]  qw:wake:all       its wake list
-- KEYS[7]  qw:producer:<token>   the calling producer's last call (see replayed())
-- ARGV[1]  the number of this call among the producer's
-- ARGV[2]  the job id
-- ARGV[3]  the job's new marker (qw:job:<id>)
-- ARGV[4]  n, the number of fields; ARGV[5..5+2n-1] the n field/value pairs of the new hash
-- ARGV[5+2n]  the job's unique key as queue.lua's ARGV[5] has it (one entry, position 1;
--          see claim_unique in common.lua), or '' for none
--
-- Only if no job with this id is stored (queued, held or delayed: its data must not be
-- overwritten) and ZREM removes the id from KEYS[1]: restore KEYS[3] (RENAME from KEYS[4]
-- when the job was kept as it was, its marker inside, else from ARGV with the marker
-- ARGV[3]), delete KEYS[2],
-- LPUSH the id onto its queue and push one wake-up token (none onto a wake list that is
-- not a list: that write comes after the job went back, so it must not fail). A job with a unique key is
-- requeued only if no other job holds the key, and takes it in the same step.
-- A call that ran already (the same producer and number) changes nothing: a job that was
-- requeued, ran and failed again is not requeued a second time by a re-sent call.
-- Returns 1 if requeued, 0 if no such failed job (or a live job has its id).

local again = replayed(KEYS[7], ARGV[1])
if again then return again end
expect(KEYS[1], 'zset')
local id = ARGV[2]
if job_stored(id) then return remember(KEYS[7], ARGV[1], 0) end
local unique = unique_entries(ARGV[5 + 2 * tonumber(ARGV[4])])
unique = unique and unique[1]
if unique then
  local holder = unique_holder(unique_key(unique[2]))
  if holder and holder ~= id then return remember(KEYS[7], ARGV[1], 0) end  -- another holds its key
end
local from = redis.call('HGET', KEYS[2], 'origin')
local q, w = KEYS[5], KEYS[6]
if from then q, w = queue_of(from) end
expect(q, 'list')  -- its queue must take it, or it stays in the registry
if redis.call('ZREM', KEYS[1], id) == 0 then return remember(KEYS[7], ARGV[1], 0) end
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('RENAME', KEYS[4], KEYS[3])
else
  store_job(id, ARGV, 5, tonumber(ARGV[4]), ARGV[3], true)
end
if unique then claim_unique(unique[2], unique[3], unique[4], id) end
redis.call('LPUSH', q, id)
if pushable(w) then wake(w, 1) end  -- a wake list of the wrong type gets no token (written last)
return remember(KEYS[7], ARGV[1], 1)
