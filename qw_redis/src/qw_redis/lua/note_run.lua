-- note_run.lua: add to how many jobs a manager's workers began in the current minute, by
-- the server's clock (Broker.note_jobs_run), so hosts whose clocks disagree count alike.
--
-- KEYS     none: the minute's key, qw:jobs-run:<minute>, is built from TIME (the prelude's
--          jobs_run_key), <minute> being the minute's start in seconds since the epoch
-- ARGV[1]  the manager's name
-- ARGV[2]  how many jobs its workers began since its last note (more than 0)
-- ARGV[3]  seconds to keep a minute's counts
--
-- Writes: HINCRBY qw:jobs-run:<minute> <manager> <count>, and EXPIRE it.
-- Returns: <minute>.

local now = tonumber(redis.call('TIME')[1])
local minute = now - now % 60
local key = jobs_run_key(minute)
redis.call('HINCRBY', key, ARGV[1], ARGV[2])
redis.call('EXPIRE', key, ARGV[3])
return minute
