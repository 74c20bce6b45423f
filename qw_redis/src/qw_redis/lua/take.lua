-- take.lua: the hot path. Finish what a worker completed, then take its next jobs and
-- return their data, all in one round trip.
--
-- KEYS[1]  <w>:jobs     the worker's list: ids sent to it directly at the head (LPUSH),
--                       the ids it holds at the tail (the last ARGV[3] entries)
-- KEYS[2]  <m>:jobs     its manager's queue
-- KEYS[3]  qw:origin    held job id -> the queue it came from (its origin: the manager's
--                       name, 'queue:<name>' for a named queue, '' for the shared queue)
-- KEYS[4]  qw:wake:<m>  wake-up tokens for the manager's queue
-- KEYS[5]  qw:due       queues with delayed jobs, by their soonest due time
-- KEYS[6]  qw:wake:<w>  wake-up tokens for jobs sent to the worker directly
-- KEYS[7]  qw:idling:<w>   the worker waits for jobs (see queue.lua's hand-off)
-- KEYS[8]  qw:handoff:<w>  jobs handed to it while it waited
-- KEYS[9]  qw:idle:<m>     workers waiting for the manager's queue
-- KEYS[10..] for each queue the worker serves, in priority order (ARGV[8] of them): its
--          list (all:jobs for the shared queue, qw:queue:<name> for a named one), its
--          wake list and its idle set: three keys each
-- ARGV[1]  the manager's name
-- ARGV[2]  limit: how many jobs to take at most (0: only finish)
-- ARGV[3]  held: how many ids on KEYS[1] the worker holds already (runs, or has waiting)
-- ARGV[4]  the largest hash (bytes of names and values) handed out; 0: no limit
-- ARGV[5]  those held ids, as a JSON array (read only when KEYS[1] has more ids than that)
-- ARGV[6]  milliseconds: if nothing is taken, the worker waits for jobs next; it is then
--          registered as waiting for that long (0: it does not wait)
-- ARGV[7]  the worker's name
-- ARGV[8]  n: how many queues it serves (KEYS[10..])
-- ARGV[9]  seconds to note the finished ids in qw:finished (0: not at all)
-- ARGV[10..9+n]  the served queues' origins ('' for the shared queue, 'queue:<name>' for
--          a named one)
-- ARGV[10+n..] ids the worker finished
--
-- 0. The worker is no longer waiting: KEYS[7] and KEYS[8] are deleted. A job handed to it
--    since its last take is on KEYS[1] with an origin entry and not held: a leftover,
--    handed out below (its hand-off entry, unread, would otherwise run it twice).
-- 1. Finish, guarded: LREM each finished id from the tail of KEYS[1]; only if it was
--    there, DEL job:<id> and its origin entry, and the unique key it holds (qw:uniques,
--    looked at only if it exists), and note it in qw:finished for ARGV[9] seconds. (A job
--    recovered meanwhile is left alone.)
-- 2. Promote due delayed jobs to their queues (promote_due in common.lua).
-- 3. Take, in order:
--    a. ids on KEYS[1] that the worker does not hold: first leftovers (ids it took whose
--       reply it never saw: they have an origin entry; among the held ids at the tail,
--       in take order), then ids sent to the worker directly (no entry; LPUSHed left of
--       every taken id, so the oldest is the rightmost of them). Each is moved to the
--       tail (LREM + RPUSH) so the tail stays in take order. When nothing is left over or
--       sent directly (the usual case) this costs one LLEN.
--    b. LMOVE <m>:jobs -> tail of KEYS[1], while under the limit and it has ids;
--    c. then from each queue served, in order, likewise: a job on an earlier queue is
--       always taken before one on a later queue.
--    Each newly taken id gets its origin recorded in KEYS[3] (a direct one: the manager).
--    A queue found empty has its wake list deleted (its tokens are stale); so has the
--    worker's own (KEYS[6]) once nothing sent to it directly is left.
--    A queue key that is not a list (some other program's key under a qw name) is
--    skipped and reported, so the healthy queues are still served; its wake list is
--    deleted too. So is qw:due or a queue's delayed set when it is not a sorted set (no
--    delayed job is promoted from it meanwhile). The worker's list, qw:origin and qw:recoveries of the wrong
--    type fail the script before it writes anything (see expect() in common.lua).
-- 4. If nothing was taken and ARGV[6] > 0: KEYS[7] is set for ARGV[6] ms to ARGV[4] (the
--    largest job the worker takes), the length of KEYS[1], and the lists it serves in
--    priority order (KEYS[2], then the served queues'), one a line; the worker added to KEYS[9] and
--    each served queue's idle set (skipped for a set of the wrong type), so that
--    queue.lua can hand it a job (only while the queues before that job's are empty).
-- Returns: {finished, broken, taken...} where finished is a list of 1/0 per finished id
-- (1: it was held and is gone now); broken lists the queue keys skipped for their type,
-- each as {key, type}; and each taken entry is {id, source, fields, marker}: source 'w' (sent to
-- the worker), 'm' (from the manager queue), 'a' (from the shared queue) or the origin of
-- a named queue ('queue:<name>'), preceded by
-- '!' for a suspect (an id in qw:suspects: run it alone; a prefix, since a queue's name
-- may end in '!' and no source starts with one); fields the
-- flat HGETALL reply, or the hash's size (a number) when its field names and values add
-- up to more than ARGV[4] bytes (the data is then not sent), or the type of job:<id> (a
-- string) when it is not a hash. A missing hash is an empty reply. The marker is the
-- string at qw:job:<id>, nil when there is none (or the job was too large), or {type}
-- when that key is not a string.

local wjobs, mjobs, origin = KEYS[1], KEYS[2], KEYS[3]
local manager = ARGV[1]
local limit = tonumber(ARGV[2])
local held = tonumber(ARGV[3])
local max_size = tonumber(ARGV[4])
local served = tonumber(ARGV[8])  -- queues: KEYS[10 + 3(i-1) ..], origins ARGV[9 + i]

expect(wjobs, 'list')
expect(origin, 'hash')
expect(RECOVERIES, 'hash')
redis.call('DEL', KEYS[7], KEYS[8])
local suspects = has_suspects()
local broken = {}
local reply = {finish(wjobs, origin, 10 + served, suspects, has_uniques(), tonumber(ARGV[9])), broken}
if limit <= 0 then return reply end

local promoted_wakes = {}
local _, bad_delayed = promote_due(origin, 100, promoted_wakes)
flush_wakes(promoted_wakes)
if bad_delayed then broken[#broken + 1] = bad_delayed end  -- delayed jobs wait; queues are served

-- Hand out `id`: record where it came from unless it has an entry already (a leftover),
-- and add its data (or its size, when too large) to the reply.
local function hand_out(id, source, from)
  if from then redis.call('HSET', origin, id, from) end
  local fields = redis.pcall('HGETALL', job_key(id))
  local marker = redis.pcall('GET', marker_key(id))
  if type(marker) == 'table' and marker.err then
    marker = {redis.call('TYPE', marker_key(id))['ok']}
  end
  if fields.err then
    fields = redis.call('TYPE', job_key(id))['ok']
  elseif max_size > 0 then
    local size = type(marker) == 'string' and #marker or 0
    for i = 1, #fields do size = size + #fields[i] end
    if size > max_size then fields, marker = size, false end
  end
  if suspects and redis.call('SISMEMBER', SUSPECTS, id) == 1 then source = '!' .. source end
  reply[#reply + 1] = {id, source, fields, marker}
end

-- Move the next id from queue `q` to the worker's tail; false when `q` is empty, or not
-- a list (reported in `broken`; its wake list `wkey` is deleted either way).
local function pop(q, wkey)
  local id = redis.pcall('LMOVE', q, wjobs, 'RIGHT', 'RIGHT')
  if type(id) == 'table' and id.err then
    local kind = kind_of(q)
    if kind == 'list' or kind == 'none' then return redis.error_reply(id.err) end  -- OOM, say
    broken[#broken + 1] = {q, kind}
    id = false
  end
  if not id then redis.call('DEL', wkey) end
  return id
end

local taken = 0
local unclaimed = redis.call('LLEN', wjobs) - held
if unclaimed > 0 then
  -- Some ids on the list are not held: leftovers, and ids sent directly. Scan from the
  -- tail leftwards: taken ids (held or left over) all have an origin entry and sit right
  -- of every id sent directly, which has none.
  local holding = {}
  for _, id in ipairs(cjson.decode(ARGV[5])) do holding[id] = true end
  local leftovers, first_direct = {}, -1
  local stop = redis.call('LLEN', wjobs) - 1
  while stop >= 0 and first_direct < 0 do
    local start = math.max(0, stop - 99)
    local ids = redis.call('LRANGE', wjobs, start, stop)
    for i = #ids, 1, -1 do
      if redis.call('HEXISTS', origin, ids[i]) == 0 then
        first_direct = start + i - 1
        break
      end
      if not holding[ids[i]] then table.insert(leftovers, 1, ids[i]) end
    end
    stop = start - 1
  end
  -- Leftovers first, oldest first; then direct ids, oldest (rightmost) first.
  local picks, direct = {}, {}
  for i = 1, math.min(#leftovers, limit) do picks[i] = leftovers[i] end
  if #picks < limit and first_direct >= 0 then
    local ids = redis.call('LRANGE', wjobs, math.max(0, first_direct - (limit - #picks) + 1), first_direct)
    for i = #ids, 1, -1 do
      picks[#picks + 1] = ids[i]
      direct[ids[i]] = true
    end
  end
  -- Move each pick to the tail, so the held tail stays in take order.
  for _, id in ipairs(picks) do
    redis.call('LREM', wjobs, -1, id)
    redis.call('RPUSH', wjobs, id)
    if direct[id] then
      hand_out(id, 'w', manager)
    else
      hand_out(id, source_of(redis.call('HGET', origin, id)), false)
    end
  end
  taken = #picks
  if unclaimed <= taken then redis.call('DEL', KEYS[6]) end
end
while taken < limit do
  local id = pop(mjobs, KEYS[4])
  if not id then break end
  if type(id) == 'table' then return id end
  hand_out(id, 'm', manager)
  taken = taken + 1
end
for i = 1, served do
  local from = ARGV[9 + i]
  local source = source_of(from)
  while taken < limit do
    local id = pop(KEYS[7 + 3 * i], KEYS[8 + 3 * i])
    if not id then break end
    if type(id) == 'table' then return id end
    hand_out(id, source, from)
    taken = taken + 1
  end
end
local wait_ms = tonumber(ARGV[6])
if taken == 0 and wait_ms > 0 then
  -- The largest job it takes, the length of its list (its held ids: nothing else is on
  -- it now), then the queues it serves in priority order, a line each (a name has no
  -- whitespace): queue.lua hands it a job only while nothing was sent to it directly
  -- since and every queue before the job's is empty.
  local value = {ARGV[4], redis.call('LLEN', wjobs), mjobs}
  for i = 1, served do value[#value + 1] = KEYS[7 + 3 * i] end
  redis.call('SET', KEYS[7], table.concat(value, '\n'), 'PX', wait_ms)
  for i = 0, served do
    local idle = KEYS[9 + 3 * i]
    if kind_of(idle) == 'set' or kind_of(idle) == 'none' then
      -- Two members picked at random leave if their registration is gone (a worker that
      -- died and was recovered after its registration expired): a set stays about as
      -- large as the workers that wait for its queue.
      for _, other in ipairs(redis.call('SRANDMEMBER', idle, 2)) do
        if redis.call('EXISTS', idling_key(other)) == 0 then redis.call('SREM', idle, other) end
      end
      redis.call('SADD', idle, ARGV[7])
    end
  end
end
return reply
