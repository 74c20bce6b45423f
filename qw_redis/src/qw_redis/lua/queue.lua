-- queue.lua: queue a batch of jobs on one queue, each job atomically (data, then its id).
--
-- KEYS[1]  the queue: all:jobs, <m>:jobs, or <w>:jobs for jobs sent to a worker
-- KEYS[2]  its wake list: qw:wake:all or qw:wake:<m> (unused when ARGV[1] is 0)
-- ARGV[1]  1: push one wake-up token per job onto KEYS[2]; 0: none (worker queues)
-- ARGV[2]  the jobs as one JSON array of [id, [field, value, field, value, ...]], in
--          queue order (one argument instead of thousands: packing each argument costs
--          the client more than the whole script costs Redis)
--
-- Writes, per job whose job:<id> does not exist yet: job:<id> (HSET), then its id
-- LPUSHed onto KEYS[1], before the next job is touched, so an error part-way leaves
-- whole jobs only. A job whose hash exists is queued, held or delayed already (or a
-- retried call ran before): it is left alone, so running this script twice with the
-- same jobs (a client retrying after a timeout) queues each once. Then up to WAKE_CAP
-- tokens on KEYS[2]. The job:<id> keys are built here from the ids (see keys.py's
-- prelude) rather than declared.
-- Returns: the number of jobs queued.

local jobs = cjson.decode(ARGV[2])
local queued = 0
for _, job in ipairs(jobs) do
  local id, fields = job[1], job[2]
  local key = job_key(id)
  if redis.call('EXISTS', key) == 0 then
    call_chunked('HSET', key, fields, 1, #fields)
    redis.call('LPUSH', KEYS[1], id)
    queued = queued + 1
  end
end
if ARGV[1] == '1' then wake(KEYS[2], queued) end
return queued
