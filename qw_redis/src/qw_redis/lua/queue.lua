-- queue.lua: queue a batch of jobs on one queue, each job atomically (data, then its id).
--
-- KEYS[1]  the queue: all:jobs, <m>:jobs, or <w>:jobs for jobs sent to a worker
-- KEYS[2]  its wake list: qw:wake:all, qw:wake:<m> or qw:wake:<w>
-- KEYS[3]  qw:producer:<token>   the calling producer's last call (see replayed())
-- KEYS[4]  qw:queues   names jobs were queued to by name
-- ARGV[1]  the jobs as one JSON array of [id, [field, value, field, value, ...], marker],
--          in queue order (one argument instead of thousands: packing each argument costs
--          the client more than the whole script costs Redis)
-- ARGV[2]  the number of this call among the producer's
-- ARGV[3]  the manager or worker KEYS[1] belongs to, '' for the shared queue
--
-- A call that ran already (the same producer and number) changes nothing, so a job is
-- queued once even if the client re-sends the call after the job ran. A queue or wake
-- list of the wrong type fails the call before anything is written (expect()).
-- Writes, per job not stored yet (neither job:<id> nor qw:job:<id> exists): job:<id>
-- (HSET) and qw:job:<id> (SET, the marker); then the ids of those, in order, LPUSHed onto
-- KEYS[1] (a few per command). Nothing between can fail (key types are checked first,
-- and Redis checks memory before a script starts, not inside it), so every job is
-- whole and queued, or untouched. A job stored already is queued, held or delayed: it is
-- left alone. Then ARGV[3] is added to KEYS[4] (so that `qw status` finds the queue if no
-- running manager or worker has that name), and up to WAKE_CAP tokens go on KEYS[2]. The job:<id> keys are built here from the
-- ids (see keys.py's prelude) rather than declared.
-- Returns: the number of jobs queued.

local again = replayed(KEYS[3], ARGV[2])
if again then return again end
expect(KEYS[1], 'list')
expect(KEYS[2], 'list')
if ARGV[3] ~= '' then expect(KEYS[4], 'set') end
local jobs = cjson.decode(ARGV[1])
local ids = {}
for _, job in ipairs(jobs) do
  local id, fields = job[1], job[2]
  if not job_stored(id) then
    store_job(id, fields, 1, #fields / 2, job[3], true)
    ids[#ids + 1] = id
  end
end
call_chunked('LPUSH', KEYS[1], ids, 1, #ids)
local queued = #ids
if queued > 0 and ARGV[3] ~= '' then redis.call('SADD', KEYS[4], ARGV[3]) end
wake(KEYS[2], queued)
return remember(KEYS[3], ARGV[2], queued)
