-- finish_result.lua: finish one job a worker completed and keep what it returned, in one
-- step (see qw_core.results).
--
-- KEYS[1]  <w>:jobs         the worker's list
-- KEYS[2]  qw:origin        held job id -> where it came from
-- KEYS[3]  qw:result:<id>   the result
-- KEYS[4]  qw:done:<id>     a token for whoever waits for the result
-- ARGV[1]  the value, as JSON text
-- ARGV[2]  the worker's name
-- ARGV[3]  how long to keep the result, in milliseconds (more than 0)
-- ARGV[4]  the job id
--
-- Finishes ARGV[4] as finish.lua does (guarded: only if the worker still holds it). Only
-- then: replaces KEYS[3] with a hash {value, finished_at (server time), worker} and puts
-- one token on KEYS[4] (BLPOP wakes a waiter; each waiter puts it back for the next),
-- both expiring after ARGV[3] ms. A result key of another type (not qw's) is replaced.
-- Returns: 1 if the job was held (finished, result kept), 0 if not (nothing written).

expect(KEYS[1], 'list')
expect(KEYS[2], 'hash')
expect(RECOVERIES, 'hash')
local held = finish(KEYS[1], KEYS[2], 4, has_suspects(), has_uniques(), 0)[1]  -- its result says it finished
if held == 1 then
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[3], 'value', ARGV[1], 'finished_at', tostring(now()), 'worker', ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
end
return held
