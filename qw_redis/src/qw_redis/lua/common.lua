-- common.lua: helpers prepended (after the key prelude from keys.py) to every script,
-- each script getting those it uses (scripts.py's used_helpers). So this file holds
-- definitions only: each starts at the margin with `local`, its body indented, its
-- closing `end` at the margin; comments at the margin between them.
-- Nothing here runs by itself; each function touches only the keys it is given or
-- builds with the prelude's key functions.

-- Lua's unpack() has a limit on how many values it can spread into one call.
local CHUNK = 200

-- Run redis.call(cmd, key, list[first..last]) in chunks of CHUNK values.
local function call_chunked(cmd, key, list, first, last)
  local i = first
  while i <= last do
    local j = math.min(i + CHUNK - 1, last)
    redis.call(cmd, key, unpack(list, i, j))
    i = j + 1
  end
end

-- The server's clock, read once per script (a script runs in microseconds, and a TIME
-- costs about what a write does): TIME's reply {seconds, microseconds}, as strings.
-- Redis 7 replicates scripts by their effects, so TIME is allowed.
local clock
local function server_time()
  if clock == nil then clock = redis.call('TIME') end
  return clock
end

-- The server's clock in seconds.
local function now()
  local t = server_time()
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Keys of the wrong type. Redis does not undo a script's writes when a later command in it
-- fails, so a script first checks, with expect(), every key it will write whose type
-- another program could have changed (a key under a qw name made a string, say): it fails
-- before it writes anything, with an error that names the key. A queue a job goes back to
-- is checked with pushable(), and a job whose queue cannot take it is parked (below).
local function kind_of(key)
  return redis.call('TYPE', key)['ok']
end

local function expect(key, kind)
  local found = kind_of(key)
  if found ~= 'none' and found ~= kind then
    error({err = 'WRONGTYPE ' .. key .. ' is a ' .. found .. ', not a ' .. kind ..
      ': qw cannot use it (another program\'s key? rename it, or delete it if it is stray)'})
  end
end

local function pushable(queue)
  local found = kind_of(queue)
  return found == 'list' or found == 'none'
end

-- Replace hash `key` with the `n` field/value pairs list[first..first+2n-1].
local function write_hash(key, list, first, n)
  redis.call('DEL', key)
  if n > 0 then call_chunked('HSET', key, list, first, first + 2 * n - 1) end
end

-- A job is two keys (see qw_redis/codec.py): job:<id>, its data as the original qw
-- stored it, and qw:job:<id>, qw's marker (encoding and metadata). These keep them together.

-- Whether job `id` is stored (either key exists: an empty dict leaves no hash).
local function job_stored(id)
  return redis.call('EXISTS', job_key(id), marker_key(id)) > 0
end

-- Store job `id`: the `n` field/value pairs list[first..] as its hash, and `marker`.
-- `fresh`: nothing is stored under `id` (the caller checked), so nothing to replace.
local function store_job(id, list, first, n, marker, fresh)
  if fresh then
    if n > 0 then call_chunked('HSET', job_key(id), list, first, first + 2 * n - 1) end
  else
    write_hash(job_key(id), list, first, n)
  end
  redis.call('SET', marker_key(id), marker)
end

-- Forget job `id`: its data and its marker.
local function drop_job(id)
  redis.call('DEL', job_key(id), marker_key(id))
end

-- Unique keys (see qw_core/unique.py and keys.py): unique_key(k) holds '<mode>:<id>', mode
-- 'e' (held while job <id> is stored), 's' (while it is stored and no worker took it: it
-- has no ORIGIN entry) or 't' (until the key expires). Whether a key is held is judged
-- from its job's own keys, so a job that vanished never holds one; UNIQUES (job id ->
-- key, for 'e' and 's') lets the end of a job delete its key with it.

-- The id of the job that holds the key at `lock` (a string or none: the caller checked),
-- or nil when it is free.
local function unique_holder(lock)
  local value = redis.call('GET', lock)
  if not value then return nil end
  local mode, id = string.sub(value, 1, 1), string.sub(value, 3)
  if mode == 't' then return id end
  if not job_stored(id) then return nil end
  if mode == 's' and redis.call('HEXISTS', ORIGIN, id) == 1 then return nil end
  return id
end

-- Job `id` takes unique key `key` in mode `mode` ('e', 's', or 't' for `ttl_ms`
-- milliseconds) unless another job holds it. The caller checked the types of the key,
-- UNIQUES and ORIGIN. Returns nil if `id` holds the key now (it took it, or held it
-- already: a call sent again), else the id of the job that holds it.
local function claim_unique(key, mode, ttl_ms, id)
  local lock = unique_key(key)
  local holder = unique_holder(lock)
  if holder then
    if holder == id then return nil end
    return holder
  end
  local old = redis.call('GET', lock)
  if old and string.sub(old, 1, 1) ~= 't' then  -- a stale holder's entry goes with it
    local old_id = string.sub(old, 3)
    if redis.call('HGET', UNIQUES, old_id) == key then redis.call('HDEL', UNIQUES, old_id) end
  end
  if mode == 't' then
    redis.call('SET', lock, 't:' .. id, 'PX', ttl_ms)
  else
    redis.call('SET', lock, mode .. ':' .. id)
    redis.call('HSET', UNIQUES, id, key)
  end
  return nil
end

-- Whether any job holds an 'e' or 's' key: one check per call, so that ending jobs costs
-- nothing more while unique jobs are not used (as has_suspects() below).
local function has_uniques()
  return kind_of(UNIQUES) == 'hash'
end

-- Job `id` ended (finished, failed, parked): delete the key it holds, if any.
local function release_unique(id)
  local key = redis.call('HGET', UNIQUES, id)
  if not key then return end
  redis.call('HDEL', UNIQUES, id)
  local lock = unique_key(key)
  local value = redis.pcall('GET', lock)
  if type(value) == 'string' and string.sub(value, 3) == id then redis.call('DEL', lock) end
end

-- The unique keys of a queueing call, ARGV text of a JSON array of [position, key, mode,
-- ttl_ms] ('' for none), checked before anything is written: position -> entry, or nil.
local function unique_entries(text)
  if text == '' then return nil end
  expect(UNIQUES, 'hash')
  expect(ORIGIN, 'hash')
  local entries = {}
  for _, entry in ipairs(cjson.decode(text)) do
    expect(unique_key(entry[2]), 'string')
    entries[entry[1]] = entry
  end
  return entries
end

-- Store each job of `jobs` (queue.lua's {id, fields, marker} entries) that is not stored
-- yet (a job already queued, delayed or held is left as it is), unless another job holds
-- its unique key (`uniques`: position -> entry, see unique_entries; nil for none).
-- Returns the positions stored, in order, and {position, holder's id, ...} of the others.
local function store_new(jobs, uniques)
  local stored, held_by = {}, {}
  for i, job in ipairs(jobs) do
    local id, fields = job[1], job[2]
    if not job_stored(id) then
      local entry = uniques and uniques[i]
      local holder = entry and claim_unique(entry[2], entry[3], entry[4], id)
      if holder then
        held_by[#held_by + 1] = i
        held_by[#held_by + 1] = holder
      else
        store_job(id, fields, 1, #fields / 2, job[3], true)
        stored[#stored + 1] = i
      end
    end
  end
  return stored, held_by
end

-- Keep job `id` as it is under qw:invalid:<id> (for a requeue once it is mended), its
-- marker folded into the hash as the field V1_MARKER, where qw kept it before (readers
-- still read it there). A marker key of the wrong type is dropped.
local function keep_job(id)
  local kept = invalid_key(id)
  redis.call('DEL', kept)
  if redis.call('EXISTS', job_key(id)) == 1 then redis.call('RENAME', job_key(id), kept) end
  local marker = redis.pcall('GET', marker_key(id))
  if type(marker) == 'string' and (kind_of(kept) == 'hash' or kind_of(kept) == 'none') then
    redis.call('HSET', kept, V1_MARKER, marker)
  end
  redis.call('DEL', marker_key(id))
end

-- Keep job `id`, which cannot go back to `queue` (not a list), in the failed registry
-- (kind 'invalid', its hash kept as it is under qw:invalid:<id>, its origin `m`), so it is
-- never dropped: `qw failed requeue` puts it back once the key is mended.
local function park(id, m, queue)
  local at = now()
  local message = 'it could not go back to its queue: ' .. queue .. ' is a ' .. kind_of(queue) .. ', not a list'
  local failure = cjson.encode({kind = 'invalid', exc_type = 'qw_core.errors.BackendError',
    message = message, traceback = '', failed_at = at})
  local record = cjson.encode({id = id, data = cjson.null, manager = m or cjson.null, attempts = 0})
  redis.call('DEL', failed_key(id))
  redis.call('SREM', SUSPECTS, id)
  redis.call('HSET', failed_key(id), 'job', record, 'failure', failure, 'origin', m or SHARED_ORIGIN)
  keep_job(id)
  if has_uniques() then release_unique(id) end
  redis.call('ZADD', FAILED, at, id)
end

-- Push `n` wake-up tokens onto the wake list `wkey`, keeping at most WAKE_CAP of them.
-- A token only says "look again": popping one never takes or loses a job.
local function wake(wkey, n)
  if n <= 0 then return end
  if n > WAKE_CAP then n = WAKE_CAP end
  local tokens = {}
  for i = 1, n do tokens[i] = '1' end
  redis.call('LPUSH', wkey, unpack(tokens))
  redis.call('LTRIM', wkey, 0, WAKE_CAP - 1)
end

-- The source a job taken from origin `from` is handed out with (take.lua's reply): 'a'
-- for the shared queue, 'm' for a manager's, the origin itself ('queue:<name>') for a
-- named queue.
local function source_of(from)
  if from == SHARED_ORIGIN then return 'a' end
  if is_named(from) then return from end
  return 'm'
end

-- Push job `id` onto queue `q` at the front (the right end, popped next) or the back, and
-- count one wake-up for its wake list `w` in `wakes` (wake list key -> count) for
-- flush_wakes. A queue that is not a list gets nothing: the job is parked in the failed
-- registry instead (origin `m`). Returns whether the job went onto the queue.
local function push_to(id, m, q, w, front, wakes)
  if not pushable(q) then
    park(id, m, q)
    return false
  end
  if front then
    redis.call('RPUSH', q, id)
  else
    redis.call('LPUSH', q, id)
  end
  wakes[w] = (wakes[w] or 0) + 1
  return true
end

-- The origin a job on worker list `wjobs` (<w>:jobs) goes back to when it has no origin
-- entry: a job queued straight onto the worker and settled before the worker took it. The
-- manager the worker registered under (MANAGER_OF, which register_worker writes; the
-- caller checked its type with expect), else the manager its name says by the
-- <manager>.<pid> convention, else the shared queue (SHARED_ORIGIN).
local function home_of(wjobs)
  local w = origin_of_list(wjobs)
  local m = redis.call('HGET', MANAGER_OF, w)
  if m then return m end
  return string.match(w, '^(.+)%.') or SHARED_ORIGIN
end

-- Put job `id`, just removed from worker list `wjobs`, back on the queue recorded for it
-- in the origin hash `origin` (the manager it was taken for, or SHARED_ORIGIN for the
-- shared queue), at the front or the back (see push_to); forget its origin entry. Without
-- an entry it goes to the worker's home (home_of). Returns whether the job went back.
local function put_back(id, origin, wjobs, front, wakes)
  local m = redis.call('HGET', origin, id)
  if m then
    redis.call('HDEL', origin, id)
  else
    m = home_of(wjobs)
  end
  local q, w = queue_of(m)
  return push_to(id, m, q, w, front, wakes)
end

local function flush_wakes(wakes)
  for wkey, n in pairs(wakes) do wake(wkey, n) end
end

-- A producer's call may run twice: a client that lost the reply (a reset connection, a
-- timeout while Redis was stalled) sends it again, though Redis ran it. So each producer
-- numbers its calls, and its key (qw:producer:<token>) keeps "number:result" of the last
-- one that ran, for PRODUCER_TTL seconds. A call whose number is there already is that
-- call again: it changes nothing and answers what the first answered.
-- The result (text) of call `seq` if it ran already, else nil.
local function replayed_text(pkey, seq)
  local last = redis.call('GET', pkey)
  if not last then return nil end
  local at = string.find(last, ':', 1, true)
  if at and string.sub(last, 1, at - 1) == seq then return string.sub(last, at + 1) end
  return nil
end

-- As replayed_text(), for a call whose result is a number.
local function replayed(pkey, seq)
  local text = replayed_text(pkey, seq)
  return text and tonumber(text)
end

local function remember(pkey, seq, result)
  redis.call('SET', pkey, seq .. ':' .. result, 'EX', PRODUCER_TTL)
  return result
end

-- Whether any job is marked a suspect (SUSPECTS, from the prelude, is a set): one check
-- per call, so that the usual case, none, costs a job nothing. A mark lasts until the job
-- ends (finished, failed or retried): a suspect put back unrun stays one.
local function has_suspects()
  return kind_of(SUSPECTS) == 'set'
end

-- Note that jobs `ids` finished now, in FINISHED (id -> the server's time in whole
-- seconds), so that for `keep` seconds their status says they succeeded though they left
-- nothing else behind. Best effort: a FINISHED of the wrong type, or a write refused,
-- costs the note, never the finish. Cheap, as every job without a result pays it: one
-- ZADD (take.lua reads the clock anyway), its score TIME's seconds as Redis gave them
-- (formatting a Lua number costs more than the ZADD), and trimming (notes older than
-- `keep`, then all but the newest FINISHED_CAP) runs on about one call in 16, picked by
-- the clock's microseconds; meanwhile the set can outgrow its cap by a few batches. A note lasts at least
-- `keep` seconds, and about a second more; workers keeping notes for different times
-- trim to the shortest.
local function note_finished(ids, keep)
  local t = server_time()
  local entries = {}
  for i = 1, #ids do
    entries[#entries + 1] = t[1]
    entries[#entries + 1] = ids[i]
    if #entries >= CHUNK or i == #ids then
      redis.pcall('ZADD', FINISHED, unpack(entries))
      entries = {}
    end
  end
  if tonumber(t[2]) % 16 == 0 then
    redis.pcall('ZREMRANGEBYSCORE', FINISHED, '-inf', '(' .. (tonumber(t[1]) - keep - 1))
    redis.pcall('ZREMRANGEBYRANK', FINISHED, 0, -FINISHED_CAP - 1)
  end
end

-- Finish, guarded, the ids ARGV[first..]: only an id still on the worker's list `wjobs`
-- (LREM from the tail, where held ids are) has its job:<id>, origin entry and recovery
-- count (RECOVERIES, from the prelude) deleted, and, if `suspects` (see has_suspects),
-- its suspect mark, and, if `uniques` (see has_uniques), its unique key; with `keep` > 0
-- it is noted as finished for that many seconds (note_finished). The caller has checked
-- the types of `wjobs`, `origin` and RECOVERIES (expect).
-- Returns a list of 1/0 per id: 1 if it was held.
local function finish(wjobs, origin, first, suspects, uniques, keep)
  local done, finished = {}, {}
  for i = first, #ARGV do
    local id = ARGV[i]
    if redis.call('LREM', wjobs, -1, id) > 0 then
      drop_job(id)
      redis.call('HDEL', origin, id)
      redis.call('HDEL', RECOVERIES, id)
      if suspects then redis.call('SREM', SUSPECTS, id) end
      if uniques then release_unique(id) end
      done[#done + 1] = 1
      finished[#finished + 1] = id
    else
      done[#done + 1] = 0
    end
  end
  if keep > 0 and #finished > 0 then note_finished(finished, keep) end
  return done
end

-- Delayed jobs. Each queue's delayed jobs wait in their own sorted set, delayed_key(m),
-- by due time; DUE holds, per queue with delayed jobs, the due time of its soonest one.
-- A queue's set and its DUE entry are only written together, by the helpers below.

-- Refresh queue `m`'s entry in DUE from its set `dkey` (dropped when the set is empty).
local function refresh_due(m, dkey)
  local first = redis.call('ZRANGE', dkey, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', DUE, m)
  else
    redis.call('ZADD', DUE, first[2], m)
  end
end

-- Make the `n` ids ids[1..n] wait until scores[i] (server time, seconds) for queue `m`.
-- The caller has checked the types of DUE and delayed_key(m) (expect).
local function delay_jobs(m, ids, scores, n)
  local dkey = delayed_key(m)
  local soonest = scores[1]
  local pairs_ = {}
  for i = 1, n do
    pairs_[#pairs_ + 1] = scores[i]
    pairs_[#pairs_ + 1] = ids[i]
    if scores[i] < soonest then soonest = scores[i] end
  end
  call_chunked('ZADD', dkey, pairs_, 1, #pairs_)
  redis.call('ZADD', DUE, 'LT', soonest, m)
end

-- Delayed jobs stored by qw before 1.0 wait in LEGACY_DELAYED, their queue in the origin
-- hash `origin`: move up to `limit` of them into the per-queue sets, due times kept. A
-- job whose set is not a sorted set is parked in the failed registry.
local function adopt_legacy(origin, limit)
  local scored = redis.call('ZRANGE', LEGACY_DELAYED, 0, limit - 1, 'WITHSCORES')
  for i = 1, #scored, 2 do
    local id, at = scored[i], tonumber(scored[i + 1])
    local m = redis.call('HGET', origin, id) or SHARED_ORIGIN
    redis.call('ZREM', LEGACY_DELAYED, id)
    redis.call('HDEL', origin, id)
    local found = kind_of(delayed_key(m))
    if found == 'zset' or found == 'none' then
      delay_jobs(m, {id}, {at}, 1)
    else
      park(id, m, delayed_key(m))
    end
  end
end

-- Move up to `limit` delayed jobs that are due (score <= server time) to the back of
-- their queues, each in the same step as its ZREM, so a job is never both delayed and
-- queued and two movers never move one twice. Counts wake-ups in `wakes`. The caller has
-- checked the type of `origin` (expect). Returns how many were moved, and a DUE or set key
-- that is not a sorted set ({key, type}, nothing moved from it) or nil.
local function promote_due(origin, limit, wakes)
  local found = kind_of(DUE)
  if found ~= 'zset' and found ~= 'none' then return 0, {DUE, found} end
  if kind_of(LEGACY_DELAYED) == 'zset' then
    adopt_legacy(origin, limit)
    found = kind_of(DUE)
  end
  if found == 'none' then return 0, nil end
  local t = now()
  local moved, broken = 0, nil
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', DUE, '-inf', t, 'LIMIT', 0, limit)) do
    local dkey = delayed_key(m)
    found = kind_of(dkey)
    if found == 'zset' then
      local q, w = queue_of(m)
      local due = redis.call('ZRANGEBYSCORE', dkey, '-inf', t, 'LIMIT', 0, limit - moved)
      for _, id in ipairs(due) do
        redis.call('ZREM', dkey, id)
        push_to(id, m, q, w, false, wakes)  -- or parked, if its queue is no list
      end
      moved = moved + #due
      refresh_due(m, dkey)
    else
      if found ~= 'none' then broken = {dkey, found} end  -- another program's key: no job there
      redis.call('ZREM', DUE, m)
    end
    if moved >= limit then break end
  end
  return moved, broken
end

