-- deregister.lua: a worker leaves one manager's registration.
--
-- KEYS[1]  <m>:workers    the manager's workers
-- KEYS[2]  all:managers   the registered managers
-- KEYS[3]  qw:hb:<w>      the worker's heartbeat
-- KEYS[4]  qw:idling:<w>  its idle registration
-- KEYS[5]  qw:handoff:<w> its hand-off list
-- ARGV[1]  the worker's name
-- ARGV[2]  the manager's name
--
-- SREM the worker from KEYS[1] and DEL KEYS[3..5]. Its qw:manager-of entry (MANAGER_OF)
-- is changed only if it names ARGV[2]: then it names the first manager by name of
-- KEYS[2] that still has the worker in its <m>:workers, or is deleted if none has (a
-- worker registered under several still goes back to one of them: see home_of in
-- common.lua). Returns nothing.

redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
-- A MANAGER_OF of the wrong type (qw status names it) leaves the rest done: pcall's error
-- is no name, and nothing more is written.
if redis.pcall('HGET', MANAGER_OF, ARGV[1]) ~= ARGV[2] then return end
local still = nil
local managers = redis.pcall('SMEMBERS', KEYS[2])
if type(managers) == 'table' then
  table.sort(managers)
  for _, m in ipairs(managers) do
    if m ~= ARGV[2] and redis.pcall('SISMEMBER', workers_key(m), ARGV[1]) == 1 then
      still = m
      break
    end
  end
end
if still then
  redis.call('HSET', MANAGER_OF, ARGV[1], still)
else
  redis.call('HDEL', MANAGER_OF, ARGV[1])
end
