-- recover.lua: hand a dead worker's jobs back, one batch per call; the reaper's atomic
-- step (checking that the worker is dead and moving its jobs cannot be split).
--
-- KEYS[1]  <w>:jobs       the dead worker's list
-- KEYS[2]  <m>:workers    its manager's workers
-- KEYS[3]  qw:origin      held job id -> manager it was taken for ('' = shared queue)
-- KEYS[4]  <m>:jobs       its manager's queue: where jobs sent to the worker directly go
-- KEYS[5]  qw:wake:<m>    the manager's wake list
-- KEYS[6]  qw:hb:<w>      the worker's heartbeat
-- KEYS[7]  qw:recoveries  job id -> how often it was put back after a crash
-- ARGV[1]  the worker's name
-- ARGV[2]  batch size: how many ids to move in this call
-- ARGV[3]  1: only if KEYS[6] does not exist (the reaper: the worker must be dead);
--          0: unconditionally (its manager saw the process exit)
-- ARGV[4]  the most recoveries a job may have (count them); '' to count nothing
-- ARGV[5]  the manager's name (the origin a poison job sent to the worker directly gets)
-- ARGV[6]  the job the worker died running, if its manager knows: only it is counted;
--          '' to count every id (the reaper cannot know which one ran)
-- ARGV[7]  a JSON array of suspects: jobs the worker had in hand beside others when it
--          died ('' for none); each one put back is added to qw:suspects (SUSPECTS), so
--          that the take that hands it out next says to run it alone
--
-- If ARGV[3] is 1 and KEYS[6] exists, change nothing; likewise if the worker is no longer
-- in KEYS[2] and holds nothing (it stopped and deregistered itself after the reaper listed
-- it: it is gone, not dead). Else SREM the worker from KEYS[2],
-- DEL KEYS[6] and its qw:idling:<w> and qw:handoff:<w> (no job is handed to it from now
-- on: see queue.lua) and its qw:manager-of entry if it names ARGV[5], take up to ARGV[2] ids from the tail of KEYS[1] (LRANGE + LTRIM) and,
-- tail first, put each back: a job the worker had taken (it has an origin entry) goes to
-- the front of its origin queue (RPUSH), so what was taken first is first in line again;
-- a job sent to the worker and never taken (no entry) goes to the back of KEYS[4]
-- (LPUSH), oldest first. (The ids are grouped per queue and pushed with one command per
-- queue and chunk, which keeps a 1,000-id batch to a few milliseconds.) Origin entries
-- are dropped; wake-up tokens are pushed. With ARGV[4], HINCRBY each id's count in
-- KEYS[7] first (only ARGV[6]'s, if given): an id counted past ARGV[4] is a poison job:
-- it is not put back but RPUSHed again onto the tail of KEYS[1] (keeping its origin
-- entry, or given ARGV[5] as one) and returned, for the caller to move it to the failed registry with fail.lua,
-- guarded by KEYS[1] like any failure. The caller repeats until nothing but the
-- returned ids remains. A job whose queue is not a list is parked in the failed registry
-- (see park() in common.lua) instead of being put back.
-- Returns: {moved in this call, ids left on KEYS[1] (the returned ones included),
-- 1 if nothing was done (alive, or gone) else 0, poison ids...}.

expect(KEYS[1], 'list')
expect(KEYS[2], 'set')
expect(KEYS[3], 'hash')
expect(KEYS[7], 'hash')
if ARGV[7] ~= '' then expect(SUSPECTS, 'set') end
if ARGV[3] == '1' then
  local held = redis.call('LLEN', KEYS[1])
  if redis.call('EXISTS', KEYS[6]) == 1 then return {0, held, 1} end
  if held == 0 and redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return {0, 0, 1} end
end
redis.call('SREM', KEYS[2], ARGV[1])
-- Out of every idle set it joined (its registration, if alive, names the queues it
-- served; the manager's and the shared queue's are known anyway), so that workers that
-- are gone do not pile up there.
local registration = redis.pcall('GET', idling_key(ARGV[1]))
if type(registration) == 'string' then
  local line_number = 0
  for line in string.gmatch(registration, '[^\n]+') do
    line_number = line_number + 1
    if line_number >= 3 then redis.pcall('SREM', idle_key(origin_of_list(line)), ARGV[1]) end
  end
end
redis.pcall('SREM', idle_key(ARGV[5]), ARGV[1])
redis.pcall('SREM', idle_key(SHARED_ORIGIN), ARGV[1])
redis.call('DEL', KEYS[6], idling_key(ARGV[1]), handoff_key(ARGV[1]))
if redis.pcall('HGET', MANAGER_OF, ARGV[1]) == ARGV[5] then redis.pcall('HDEL', MANAGER_OF, ARGV[1]) end
local batch = tonumber(ARGV[2])
local limit = tonumber(ARGV[4])
local counted = ARGV[6]
local suspects = {}
if ARGV[7] ~= '' then
  for _, id in ipairs(cjson.decode(ARGV[7])) do suspects[id] = true end
end
local ids = redis.call('LRANGE', KEYS[1], -batch, -1)
if #ids == 0 then return {0, 0, 0} end
redis.call('LTRIM', KEYS[1], 0, -#ids - 1)
-- Where each id goes, grouped by queue so that each queue gets one push per batch:
-- `front` ids (taken: RPUSH, in this order), `back` ids (sent directly: LPUSH).
local front, back, wakes, poison, forget, origins = {}, {}, {}, {}, {}, {}
local moved = 0
local function add(groups, q, id)
  local list = groups[q]
  if not list then
    list = {}
    groups[q] = list
  end
  list[#list + 1] = id
end
for i = #ids, 1, -1 do
  local id = ids[i]
  if limit and (counted == '' or counted == id) and redis.call('HINCRBY', KEYS[7], id, 1) > limit then
    table.insert(poison, 1, id)
    if redis.call('HEXISTS', KEYS[3], id) == 0 then redis.call('HSET', KEYS[3], id, ARGV[5]) end
  else
    local m = redis.call('HGET', KEYS[3], id)
    local w
    if not m then
      add(back, KEYS[4], id)
      w = KEYS[5]
    else
      forget[#forget + 1] = id
      local q
      q, w = queue_of(m)
      add(front, q, id)
      origins[q] = m
    end
    wakes[w] = (wakes[w] or 0) + 1
    if suspects[id] then redis.call('SADD', SUSPECTS, id) end
    moved = moved + 1
  end
end
if #forget > 0 then call_chunked('HDEL', KEYS[3], forget, 1, #forget) end
origins[KEYS[4]] = ARGV[5]
local function push(cmd, groups)
  for q, list in pairs(groups) do
    if pushable(q) then
      call_chunked(cmd, q, list, 1, #list)
    else  -- not a list: kept in the failed registry instead (see park() in common.lua)
      for _, id in ipairs(list) do park(id, origins[q], q) end
      moved = moved - #list
    end
  end
end
push('RPUSH', front)
push('LPUSH', back)
flush_wakes(wakes)
if #poison > 0 then call_chunked('RPUSH', KEYS[1], poison, 1, #poison) end
local reply = {moved, redis.call('LLEN', KEYS[1]), 0}
for _, id in ipairs(poison) do reply[#reply + 1] = id end
return reply
