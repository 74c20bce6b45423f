-- queue.lua: queue a batch of jobs on one queue, each job atomically (data, then its id).
--
-- KEYS[1]  the queue: all:jobs, <m>:jobs, or <w>:jobs for jobs sent to a worker
-- KEYS[2]  its wake list: qw:wake:all or qw:wake:<m> (unused when ARGV[1] is 0)
-- ARGV[1]  1: push one wake-up token per job onto KEYS[2]; 0: none (worker queues)
-- ARGV[2]  the jobs as one JSON array of [id, [field, value, field, value, ...]], in
--          queue order (one argument instead of thousands: packing each argument costs
--          the client more than the whole script costs Redis)
--
-- Writes, per job: job:<id> replaced (DEL, HSET), then its id LPUSHed onto KEYS[1],
-- before the next job is touched, so an error part-way leaves whole jobs only. Then up
-- to WAKE_CAP tokens on KEYS[2]. The job:<id> keys are built here from the ids (see
-- keys.py's prelude) rather than declared.
-- Returns: the number of jobs queued.

local jobs = cjson.decode(ARGV[2])
for _, job in ipairs(jobs) do
  local id, fields = job[1], job[2]
  write_hash(job_key(id), fields, 1, #fields / 2)
  redis.call('LPUSH', KEYS[1], id)
end
if ARGV[1] == '1' then wake(KEYS[2], #jobs) end
return #jobs
