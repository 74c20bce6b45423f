-- move.lua: move jobs waiting under a name to another queue, oldest first.
--
-- KEYS[1]  <name>:jobs      the list moved from: a manager's queue, or a worker's list
-- KEYS[2]  the queue moved to: <m>:jobs, or all:jobs
-- KEYS[3]  its wake list
-- KEYS[4]  qw:origin        entries of the moved jobs are dropped: they wait on a queue now
-- KEYS[5]  all:managers
-- KEYS[6]  qw:queues
-- ARGV[1]  the name KEYS[1] belongs to
-- ARGV[2]  the most jobs to move in this call (the caller calls again until none moves)
--
-- A running worker's list (it is in some running manager's <m>:workers, or it has a
-- heartbeat and is not a manager) holds jobs it took: the call fails with IN_USE and
-- moves nothing. Otherwise each job goes, in one RPOPLPUSH, from the old end of KEYS[1]
-- to the back of KEYS[2], so the moved jobs keep their order and nothing is ever in
-- neither list. Idempotent: a repeated call moves what is left. Once KEYS[1] is empty,
-- ARGV[1] leaves KEYS[6] unless it is a running manager's.
-- Returns: how many jobs moved.

local name = ARGV[1]
local manager = redis.call('SISMEMBER', KEYS[5], name) == 1
local worker = not manager and redis.call('EXISTS', heartbeat_key(name)) == 1
if not worker then
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if redis.call('SISMEMBER', workers_key(m), name) == 1 then worker = true end
  end
end
if worker then
  return redis.error_reply('IN_USE worker ' .. name .. ' is running: the jobs on its list are its own')
end
expect(KEYS[1], 'list')
expect(KEYS[2], 'list')
expect(KEYS[6], 'set')
local moved = 0
while moved < tonumber(ARGV[2]) do
  local id = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if not id then break end
  redis.call('HDEL', KEYS[4], id)
  moved = moved + 1
end
wake(KEYS[3], moved)
if redis.call('LLEN', KEYS[1]) == 0 and not manager then redis.call('SREM', KEYS[6], name) end
return moved
