-- queue.lua: queue a batch of jobs on one queue, each job atomically (data, then its id),
-- handing the first ones straight to workers that wait for that queue.
--
-- KEYS[1]  the queue: all:jobs, <m>:jobs, or <w>:jobs for jobs sent to a worker
-- KEYS[2]  its wake list: qw:wake:all, qw:wake:<m> or qw:wake:<w>
-- KEYS[3]  qw:producer:<token>   the calling producer's last call (see replayed())
-- KEYS[4]  qw:queues   names jobs were queued to by name
-- KEYS[5]  qw:idle:all or qw:idle:<m>: workers waiting for this queue (see hand-off below)
-- KEYS[6]  qw:origin   held job id -> where it came from
-- ARGV[1]  the jobs as one JSON array of [id, [field, value, field, value, ...], marker],
--          in queue order (one argument instead of thousands: packing each argument costs
--          the client more than the whole script costs Redis)
-- ARGV[2]  the number of this call among the producer's
-- ARGV[3]  the manager or worker KEYS[1] belongs to, 'queue:<name>' for a named queue,
--          '' for the shared queue (the origin of a job handed off)
-- ARGV[4]  '1': the jobs may be handed to waiting workers (KEYS[1] is a manager's queue or
--          the shared one); '': not (jobs sent to a worker directly)
-- ARGV[5]  the jobs' unique keys: a JSON array of [position in ARGV[1], key, mode ('e',
--          's', 't'), TTL in ms ('t')], or '' when no job has one (see claim_unique in
--          common.lua)
--
-- Unique keys: a job with one is stored only if it takes its key (claim_unique: no other
-- job holds it), in this same step; else nothing of it is written, and the call's
-- result names the job that holds the key. The key, qw:uniques and qw:origin are checked
-- (expect) with the other keys, before anything is written.
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
--
-- Hand-off (what saves a waiting worker the round trip of a take after its wake-up): when
-- the queue is empty (so no job queued earlier is passed over) and workers wait for it
-- (each in KEYS[5] with its qw:idling:<w> alive: a member without one is stale and is
-- dropped), the first jobs, in queue order, are taken here on their behalf, one each,
-- exactly as take.lua takes a job: the id goes to the tail of <w>:jobs with its origin
-- entry in KEYS[6]; a worker with a job sent to it directly, or waiting on a queue it
-- serves before this one, is passed over (it takes that job first). The job's data goes on qw:handoff:<w>, which the worker's blocking
-- wait includes, so it starts the job on the reply of that wait. The worker's
-- qw:idling:<w> is deleted (one hand-off per wait). If that reply is lost, the job is a
-- leftover on <w>:jobs, which the worker's next take hands out (deleting the stale
-- hand-off); if the worker died, its recovery puts the job back like any it held. A job
-- larger than the worker's limit (the value of qw:idling:<w>) is not handed off, and
-- neither is any job after it. Keys of the wrong type make a worker (or the hand-off)
-- skipped, never the call fail.
-- Returns: the number of jobs queued; with ARGV[5], the JSON text of [that number,
-- then position, holder's id for each job not queued because another job holds its key].

local unique_call = ARGV[5] ~= nil and ARGV[5] ~= ''
local again
if unique_call then again = replayed_text(KEYS[3], ARGV[2]) else again = replayed(KEYS[3], ARGV[2]) end
if again then return again end
-- The queue's length, which also says it is a list (or none); else expect() fails the call.
local queue_length = redis.pcall('LLEN', KEYS[1])
if type(queue_length) ~= 'number' then expect(KEYS[1], 'list') end
expect(KEYS[2], 'list')
if ARGV[3] ~= '' then expect(KEYS[4], 'set') end
local uniques = unique_call and unique_entries(ARGV[5])
local jobs = cjson.decode(ARGV[1])

-- Waiting workers that can be handed a job now, picked before anything is written (a
-- check that fails must not leave a job stored and unqueued): {name, limit} each.
local waiting, busy = {}, {}

-- From a waiting worker's qw:idling:<w> `value` (see take.lua, step 4) and the length of
-- its list, `held`: the largest job it takes (0: no limit), and whether it is free for a
-- job of KEYS[1]: nothing was sent to it directly since it registered (its list is as
-- long as it was then), and every queue it serves before KEYS[1] is empty. A job sent to
-- it, or on one of those queues (put back by a recovery, a retry or a release, due, or
-- pushed by hand: each wakes the worker, or its next slice finds it) comes first: the
-- worker then takes it itself, and is not handed this one. (A queue that is not a list
-- is skipped by the worker, so it counts as empty.)
local function served_before(value, held)
  local lines = {}
  for line in string.gmatch(value, '[^\n]+') do lines[#lines + 1] = line end
  local limit = tonumber(lines[1]) or 0
  if lines[2] and tonumber(lines[2]) ~= held then return limit, false end
  local mine = 0
  for i = 3, #lines do
    if lines[i] == KEYS[1] then
      mine = i
      break
    end
  end
  for i = 3, mine - 1 do
    local n = redis.pcall('LLEN', lines[i])
    if type(n) == 'number' and n > 0 then return limit, false end
  end
  return limit, true
end

-- Cheapest first: with nobody waiting (the idle set is gone, as it is while workers are
-- busy) this costs one TYPE.
if ARGV[4] == '1' and #jobs > 0 and kind_of(KEYS[5]) == 'set'
    and (kind_of(KEYS[6]) == 'hash' or kind_of(KEYS[6]) == 'none') and queue_length == 0 then
  local tries = 0
  while #waiting < #jobs and tries < 2 * #jobs + 8 do
    tries = tries + 1
    local w = redis.call('SPOP', KEYS[5])
    if not w then break end
    local value = redis.pcall('GET', idling_key(w))
    local held = redis.pcall('LLEN', queue_key(w))  -- a number: its list is a list, or none
    local handoff = kind_of(handoff_key(w))
    if type(value) == 'string' and type(held) == 'number'
        and (handoff == 'list' or handoff == 'none') then
      local limit, first = served_before(value, held)
      if first then
        waiting[#waiting + 1] = {w, limit}
      else
        busy[#busy + 1] = w
      end
    end
  end
end

-- How long a hand-off nobody read is kept: its job is on <w>:jobs either way.
local HANDOFF_TTL_MS = 60000

-- A taken job's data for the worker's wait: id, source, marker and the fields, each as
-- <length>:<bytes> (binary-safe; qw_redis.scripts decodes it).
local function packed(id, source, fields, marker)
  local parts = {#id, ':', id, #source, ':', source, #marker, ':', marker}
  for _, text in ipairs(fields) do
    parts[#parts + 1] = #text
    parts[#parts + 1] = ':'
    parts[#parts + 1] = text
  end
  return table.concat(parts)
end

local positions, held_by = store_new(jobs, uniques)
local ids, stored = {}, {}
for _, i in ipairs(positions) do
  ids[#ids + 1] = jobs[i][1]
  stored[#stored + 1] = jobs[i]
end

local handed = 0
local source = source_of(ARGV[3])
for i, pick in ipairs(waiting) do
  local job = stored[i]
  if not job then break end
  local w, limit = pick[1], pick[2]
  local size = #job[3]
  for _, text in ipairs(job[2]) do size = size + #text end
  if limit > 0 and size > limit then break end  -- it, and the jobs after it, go on the queue
  redis.call('DEL', idling_key(w))
  redis.call('RPUSH', queue_key(w), job[1])
  redis.call('HSET', KEYS[6], job[1], ARGV[3])
  redis.call('LPUSH', handoff_key(w), packed(job[1], source, job[2], job[3]))
  redis.call('PEXPIRE', handoff_key(w), HANDOFF_TTL_MS)  -- unread (the worker died): the job is not lost
  handed = i
end
-- Workers picked and not handed a job wait on: back in the set.
for i = handed + 1, #waiting do redis.call('SADD', KEYS[5], waiting[i][1]) end
for _, w in ipairs(busy) do redis.call('SADD', KEYS[5], w) end

call_chunked('LPUSH', KEYS[1], ids, handed + 1, #ids)
local queued = #ids
if queued > 0 and ARGV[3] ~= '' then redis.call('SADD', KEYS[4], ARGV[3]) end
wake(KEYS[2], queued - handed)
if unique_call then
  table.insert(held_by, 1, queued)
  return remember(KEYS[3], ARGV[2], cjson.encode(held_by))
end
return remember(KEYS[3], ARGV[2], queued)
