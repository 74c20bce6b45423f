-- stray.lua: the queues holding jobs under a name no running manager or worker has.
--
-- KEYS[1]  qw:queues      names jobs were queued to by name (see queue.lua)
-- KEYS[2]  all:managers   the running managers
--
-- A name is in use when it is a running manager's, a running worker's (in some running
-- manager's <m>:workers), or has a heartbeat. A key of the wrong type (which problems()
-- reports) counts as in use, so that nothing here fails on it. Reads only.
-- Returns: a flat list of name, count for each stray queue that holds jobs.

local function ok(reply)
  if type(reply) == 'table' and reply.err then return nil end
  return reply
end

local managers = ok(redis.pcall('SMEMBERS', KEYS[2])) or {}
local running = {}
for _, m in ipairs(managers) do running[m] = true end

local function in_use(name)
  if running[name] then return true end
  if redis.call('EXISTS', heartbeat_key(name)) == 1 then return true end
  for _, m in ipairs(managers) do
    local member = ok(redis.pcall('SISMEMBER', workers_key(m), name))
    if member ~= 0 then return true end
  end
  return false
end

local names = ok(redis.pcall('SMEMBERS', KEYS[1])) or {}
local found = {}
for _, name in ipairs(names) do
  local count = not is_named(name) and ok(redis.pcall('LLEN', queue_key(name)))  -- named: never stray
  if count and count > 0 and not in_use(name) then
    found[#found + 1] = name
    found[#found + 1] = count
  end
end
return found
