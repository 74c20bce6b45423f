-- beat.lua: a manager's heartbeat, for itself and its running workers, in one step.
--
-- KEYS[1]    all:managers   the running managers
-- KEYS[2]    qw:managers    manager name -> token of its current start
-- KEYS[3]    <m>:workers    the manager's workers
-- KEYS[4]    qw:hb:<m>      the manager's heartbeat
-- KEYS[5..]  qw:hb:<w>      one heartbeat per worker, in the order of ARGV[4..]
-- ARGV[1]    the manager's name
-- ARGV[2]    the manager's token (unique to this start of the process)
-- ARGV[3]    the heartbeat TTL in milliseconds
-- ARGV[4..]  worker name, worker token, ... (pairs, one per KEYS[5..])
--
-- SET each heartbeat to its token with PX ARGV[3], and (re)register: SADD the manager to
-- KEYS[1], HSET it with its token in KEYS[2], SADD each worker to KEYS[3] (a worker the
-- reaper removed while it was paused is registered again, so the reaper can find it if
-- it dies later). A heartbeat that was missing, or held another token, is reported: a
-- process paused past its TTL (it may have been reaped), or another one with its name.
-- Returns: {name, previous token ('' if there was none), ...} for each such heartbeat.

expect(KEYS[1], 'set')
expect(KEYS[2], 'hash')
expect(KEYS[3], 'set')
local ttl = ARGV[3]
local changed = {}
local function beat(key, name, token)
  local previous = redis.call('GET', key)
  redis.call('SET', key, token, 'PX', ttl)
  if previous ~= token then
    changed[#changed + 1] = name
    changed[#changed + 1] = previous or ''
  end
end

beat(KEYS[4], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for i = 5, #KEYS do
  local name, token = ARGV[2 * i - 6], ARGV[2 * i - 5]
  beat(KEYS[i], name, token)
  redis.call('SADD', KEYS[3], name)
end
return changed
