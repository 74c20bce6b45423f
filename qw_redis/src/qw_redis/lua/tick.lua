-- tick.lua: enqueue one tick of a schedule, once across every manager: check that the
-- tick is newer than the schedule's last, record it, and queue its job, in one step.
--
-- KEYS[1]  qw:tick:<id>   the schedule's last enqueued tick (hash: tick, manager, at, job)
-- KEYS[2]  the job's queue: all:jobs, or qw:queue:<name> for a named queue
-- KEYS[3]  its wake list: qw:wake:all or qw:wake:queue:<name>
-- KEYS[4]  qw:queues   names jobs were queued to by name
-- ARGV[1]  the tick, seconds since the epoch (a number as text)
-- ARGV[2]  the manager enqueueing it
-- ARGV[3]  the job's id (derived from the schedule and the tick)
-- ARGV[4]  the queue's origin: '' for the shared queue, 'queue:<name>' for a named queue
-- ARGV[5]  how long to keep KEYS[1], in milliseconds
-- ARGV[6]  the job's marker (qw:job:<id>)
-- ARGV[7]  the job's unique key as queue.lua's ARGV[5] has it (one entry, position 1;
--          see claim_unique in common.lua), or '' for none
-- ARGV[8..] the job's hash: field, value, field, value...
--
-- A tick not newer than KEYS[1]'s (the same tick: a call re-sent after a lost reply, or
-- another manager's; or an older one) writes nothing. Otherwise, after checking the types
-- of every key it writes (expect(): a wrong type fails the call before any write), it
-- stores the job (job:<id> and qw:job:<id>, unless a job with that id is stored already),
-- LPUSHes its id onto KEYS[2] with a wake-up token on KEYS[3], adds ARGV[4] to KEYS[4]
-- for a named queue, and records the tick in KEYS[1] with the manager, the server's time
-- and the job id (PEXPIRE ARGV[5]). A job with a unique key is stored only if it takes
-- its key (as in queue.lua); while another job (an earlier tick's, say) holds it, the
-- tick is recorded with that job's id and nothing is queued. Nothing between the checks and the last write can
-- fail, so the tick is recorded with its job queued, or neither.
-- Returns: {1 if this call enqueued the tick else 0, tick, manager, at, job} of the
-- schedule's last tick after the call.

expect(KEYS[1], 'hash')
local last = redis.call('HMGET', KEYS[1], 'tick', 'manager', 'at', 'job')
local last_tick = tonumber(last[1])
if last_tick and tonumber(ARGV[1]) <= last_tick then
  return {0, last[1], last[2] or '', last[3] or '0', last[4] or ''}
end
expect(KEYS[2], 'list')
expect(KEYS[3], 'list')
if ARGV[4] ~= '' then expect(KEYS[4], 'set') end
local unique = unique_entries(ARGV[7])
unique = unique and unique[1]

local id = ARGV[3]
if not job_stored(id) then
  local holder = unique and claim_unique(unique[2], unique[3], unique[4], id)
  if holder then
    id = holder  -- the tick's job is the one that holds its key
  else
    store_job(id, ARGV, 8, (#ARGV - 7) / 2, ARGV[6], true)
    redis.call('LPUSH', KEYS[2], id)
    wake(KEYS[3], 1)
    if ARGV[4] ~= '' then redis.call('SADD', KEYS[4], ARGV[4]) end
  end
end
local at = string.format('%.6f', now())
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'tick', ARGV[1], 'manager', ARGV[2], 'at', at, 'job', id)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, ARGV[1], ARGV[2], at, id}
