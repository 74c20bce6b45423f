-- promote.lua: the delayed-job mover. Move due delayed jobs to their queues, and say when
-- the next one is due (so a blocked taker can wake up for it).
--
-- KEYS[1]  qw:due       queues with delayed jobs, by their soonest due time
-- KEYS[2]  qw:origin    held job id -> manager it was taken for (and, for jobs delayed by
--                       qw before 1.0, the queue they go to)
-- ARGV[1]  the most jobs to move in this call
--
-- Moves up to ARGV[1] due jobs with promote_due (common.lua): each id's ZREM and its
-- LPUSH onto its queue happen in this one script, so any number of movers may race
-- (every job moves exactly once) and none can die half-way. Pushes wake-up tokens.
-- Returns: {moved, ms until the next delayed job is due (0 if one is due now, or jobs
-- delayed before 1.0 are still to be sorted into their queues' sets), or -1 if none is
-- delayed}. A key of the wrong type (take.lua reports it) counts as no delayed job.

expect(KEYS[2], 'hash')
local wakes = {}
local moved, broken = promote_due(KEYS[2], tonumber(ARGV[1]), wakes)
flush_wakes(wakes)
if broken and broken[1] == KEYS[1] then return {moved, -1} end
if kind_of(LEGACY_DELAYED) == 'zset' then return {moved, 0} end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #next_due == 0 then return {moved, -1} end
return {moved, math.max(0, math.ceil((tonumber(next_due[2]) - now()) * 1000))}
