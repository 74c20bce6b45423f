-- forget_manager.lua: drop a dead manager from the membership keys, once nothing is left.
--
-- KEYS[1]  all:managers   the running managers
-- KEYS[2]  qw:managers    manager name -> token of its current start
-- KEYS[3]  qw:hb:<m>      the manager's heartbeat
-- KEYS[4]  <m>:workers    its workers
-- ARGV[1]  the manager's name
--
-- Only if KEYS[3] does not exist (no start of the manager is alive) and KEYS[4] is empty
-- (the reaper has recovered every worker): SREM the manager from KEYS[1] and HDEL it
-- from KEYS[2]. Its queue <m>:jobs is left alone: a manager started again under the
-- same name takes those jobs.
-- Returns 1 if the manager was forgotten, else 0.

expect(KEYS[1], 'set')
expect(KEYS[2], 'hash')
expect(KEYS[4], 'set')
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('SCARD', KEYS[4]) > 0 then return 0 end
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
