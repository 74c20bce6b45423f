-- common.lua: helpers prepended (after the key prelude from keys.py) to every script.
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

-- Put job `id` back on the queue recorded for it in the origin hash `origin` (the
-- manager it was taken for, or SHARED_ORIGIN for the shared queue), at the front (the
-- right end, popped next) or the back; forget its origin entry. Without an entry the job
-- goes to `fallback_queue`. Counts one wake-up per destination in `wakes`
-- (wake list key -> count) for flush_wakes.
local function put_back(id, origin, fallback_queue, fallback_wake, front, wakes)
  local m = redis.call('HGET', origin, id)
  local q, w = fallback_queue, fallback_wake
  if m then
    redis.call('HDEL', origin, id)
    if m == SHARED_ORIGIN then
      q, w = ALL_JOBS, WAKE_ALL
    else
      q, w = queue_key(m), wake_key(m)
    end
  end
  if front then
    redis.call('RPUSH', q, id)
  else
    redis.call('LPUSH', q, id)
  end
  wakes[w] = (wakes[w] or 0) + 1
end

local function flush_wakes(wakes)
  for wkey, n in pairs(wakes) do wake(wkey, n) end
end

-- The server's clock in seconds (Redis 7 replicates scripts by effects, so TIME is allowed).
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Replace hash `key` with the `n` field/value pairs list[first..first+2n-1].
local function write_hash(key, list, first, n)
  redis.call('DEL', key)
  if n > 0 then call_chunked('HSET', key, list, first, first + 2 * n - 1) end
end

-- Finish, guarded, the ids ARGV[first..]: only an id still on the worker's list `wjobs`
-- (LREM from the tail, where held ids are) has its job:<id>, origin entry and recovery
-- count (RECOVERIES, from the prelude) deleted.
-- Returns a list of 1/0 per id: 1 if it was held.
local function finish(wjobs, origin, first)
  local done = {}
  for i = first, #ARGV do
    local id = ARGV[i]
    if redis.call('LREM', wjobs, -1, id) > 0 then
      redis.call('DEL', job_key(id))
      redis.call('HDEL', origin, id)
      redis.call('HDEL', RECOVERIES, id)
      done[#done + 1] = 1
    else
      done[#done + 1] = 0
    end
  end
  return done
end

-- Move up to `limit` delayed jobs that are due (score <= server time) from the zset
-- `delayed` to the back of the queue their entry in the origin hash `origin` names (the
-- shared queue without one), each in the same step as its ZREM, so a job is never both
-- delayed and queued and two movers never move one twice. Counts wake-ups in `wakes`.
-- Returns how many were moved.
local function promote_due(delayed, origin, limit, wakes)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now(), 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    put_back(id, origin, ALL_JOBS, WAKE_ALL, false, wakes)
  end
  return #due
end

