-- requeue_failed_batch.lua: move a batch of failed jobs back onto the queues they came from.
--
-- KEYS[1]  qw:failed              failed ids by time
-- KEYS[2]  qw:producer:<token>    the calling producer's last call (see replayed())
-- ARGV[1]  the number of this call among the producer's
-- ARGV[2]  the jobs as one JSON array of [id, score, [field, value, ...], marker]: a failed
--          job's id, its score in KEYS[1] when the caller read its record (as text), and
--          the job stored anew from that record, attempts reset (hash fields and marker),
--          and for a job with a unique key a fifth element, [position, key, mode,
--          ttl_ms] (see claim_unique in common.lua)
--
-- Per job, in order, only if it is still the failure the caller read (its score in
-- KEYS[1] is the one given: a job requeued and failed again since has a later one), no
-- job with its id is stored (queued, held or delayed: its data must not be overwritten),
-- and the queue its entry's 'origin' names (qw:failed:<id>, built with the prelude's key
-- functions; the shared queue without one) is a list or none: ZREM it from KEYS[1],
-- delete qw:failed:<id>, restore job:<id> (RENAME from qw:invalid:<id> when the job was
-- kept as it was, its marker inside, else HSET from ARGV with SET qw:job:<id>). Any
-- other job is passed over, untouched; so is a job whose unique key another job holds
-- (one whose key is free takes it, in the same step). Then the ids requeued are LPUSHed onto their
-- queues, in order, a few per command, and one wake-up token per job goes on each queue's
-- wake list (up to WAKE_CAP), where that is a list. Nothing between can fail (key types
-- are checked first), so each job is whole and requeued, or untouched.
-- A call that ran already (the same producer and number) changes nothing and answers as
-- the first did.
-- Returns: one character per job, in order: '1' requeued, '0' passed over.

local again = replayed_text(KEYS[2], ARGV[1])
if again then return again end
expect(KEYS[1], 'zset')
local jobs = cjson.decode(ARGV[2])
local checked = false
for _, job in ipairs(jobs) do
  if job[5] and not checked then
    expect(UNIQUES, 'hash')
    expect(ORIGIN, 'hash')
    checked = true
  end
  if job[5] then expect(unique_key(job[5][2]), 'string') end
end
local flags = {}
local queues = {}  -- queue key -> {its wake list, ids to push}, or false if it is not a list
local order = {}   -- the queue keys, in the order their first job came
for i, job in ipairs(jobs) do
  local id, fields, unique = job[1], job[3], job[5]
  flags[i] = '0'
  local score = redis.call('ZSCORE', KEYS[1], id)
  local holder = unique and unique_holder(unique_key(unique[2]))
  if score and tonumber(score) == tonumber(job[2]) and not job_stored(id) and (not holder or holder == id) then
    local entry = failed_key(id)
    local from = redis.pcall('HGET', entry, 'origin')  -- an error (not a hash): passed over
    if type(from) ~= 'table' then
      local q, w = ALL_JOBS, WAKE_ALL
      if from then q, w = queue_of(from) end
      if queues[q] == nil then
        queues[q] = pushable(q) and {w, {}} or false
        order[#order + 1] = q
      end
      if queues[q] then
        redis.call('ZREM', KEYS[1], id)
        redis.call('DEL', entry)
        if unique then claim_unique(unique[2], unique[3], unique[4], id) end
        if redis.call('EXISTS', invalid_key(id)) == 1 then
          redis.call('RENAME', invalid_key(id), job_key(id))
        else
          store_job(id, fields, 1, #fields / 2, job[4], true)
        end
        local ids = queues[q][2]
        ids[#ids + 1] = id
        flags[i] = '1'
      end
    end
  end
end
-- Nothing above can fail once a job's keys are checked, so pushing the ids of each queue
-- together (as queue.lua does) leaves no job stored and not queued.
for _, q in ipairs(order) do
  local target = queues[q]
  if target and #target[2] > 0 then
    call_chunked('LPUSH', q, target[2], 1, #target[2])
    if pushable(target[1]) then wake(target[1], #target[2]) end
  end
end
return remember(KEYS[2], ARGV[1], table.concat(flags))
