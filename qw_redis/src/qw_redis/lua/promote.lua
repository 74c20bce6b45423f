-- promote.lua: the delayed-job mover. Move due delayed jobs to their queues, and say when
-- the next one is due (so a blocked taker can wake up for it).
--
-- KEYS[1]  qw:delayed   delayed and retried jobs by due time (server time, seconds)
-- KEYS[2]  qw:origin    delayed job id -> manager whose queue it goes to ('' = shared)
-- ARGV[1]  the most jobs to move in this call
--
-- Moves up to ARGV[1] due jobs with promote_due (common.lua): each id's ZREM and its
-- LPUSH onto its queue happen in this one script, so any number of movers may race
-- (every job moves exactly once) and none can die half-way. Pushes wake-up tokens.
-- Returns: {moved, ms until the next delayed job is due (0 if one is due now), or -1 if
-- none is delayed}.

if kind_of(KEYS[1]) ~= 'zset' then return {0, -1} end  -- none, or not ours: take.lua reports it
expect(KEYS[2], 'hash')
local wakes = {}
local moved = promote_due(KEYS[1], KEYS[2], tonumber(ARGV[1]), wakes)
flush_wakes(wakes)
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #next_due == 0 then return {moved, -1} end
return {moved, math.max(0, math.ceil((tonumber(next_due[2]) - now()) * 1000))}
