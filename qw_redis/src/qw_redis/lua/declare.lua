-- declare.lua: a manager declares the schedules it runs (or withdraws them), and reads
-- their last ticks.
--
-- KEYS[1]  qw:declared:<m>   the manager's declarations (hash: schedule id -> JSON)
-- KEYS[2]  qw:schedulers     managers that declared schedules
-- ARGV[1]  the manager's name
-- ARGV[2]  how long the declarations last, in milliseconds (a heartbeat TTL)
-- ARGV[3]  how long a declared schedule's last tick is kept, in milliseconds
-- ARGV[4..] schedule id, declaration, ... (pairs; none: withdraw everything)
--
-- Replaces KEYS[1] with the pairs (PEXPIRE ARGV[2]) and adds the manager to KEYS[2], or,
-- with no pairs, deletes KEYS[1] and removes the manager from KEYS[2]. Drops from KEYS[2]
-- the managers whose declarations have lapsed. Refreshes the expiry (PEXPIRE ARGV[3]) of
-- each declared schedule's qw:tick:<id>, so a schedule's last tick lasts while a manager
-- declares it and is forgotten a while after none does. A qw:tick:<id> that is not a hash
-- counts as no tick (tick.lua refuses to write it).
-- Returns: {id, tick, manager, at, job, ...} for each declared schedule with a last tick.

expect(KEYS[1], 'hash')
expect(KEYS[2], 'set')
redis.call('DEL', KEYS[1])
if #ARGV > 3 then
  call_chunked('HSET', KEYS[1], ARGV, 4, #ARGV)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', declared_key(m)) == 0 then redis.call('SREM', KEYS[2], m) end
end
local found = {}
for i = 4, #ARGV, 2 do
  local key = tick_key(ARGV[i])
  if kind_of(key) == 'hash' then
    local last = redis.call('HMGET', key, 'tick', 'manager', 'at', 'job')
    if last[1] then
      redis.call('PEXPIRE', key, ARGV[3])
      found[#found + 1] = ARGV[i]
      found[#found + 1] = last[1]
      found[#found + 1] = last[2] or ''
      found[#found + 1] = last[3] or '0'
      found[#found + 1] = last[4] or ''
    end
  end
end
return found
