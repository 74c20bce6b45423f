-- release.lua: put held jobs that never started back at the front of their queues.
--
-- KEYS[1]  <w>:jobs      the worker's list
-- KEYS[2]  qw:origin     held job id -> manager it was taken for ('' = shared queue)
-- ARGV     the ids, in the order they were taken
--
-- For each id (last first) that LREM removes from KEYS[1]: RPUSH it onto its origin
-- queue (the right end, which LMOVE RIGHT pops next, so ARGV[1] ends up first in line),
-- drop its origin entry, and push one wake-up token per job (a job whose queue is not a
-- list is parked in the failed registry instead; one without an origin entry goes to its
-- worker's home: see put_back and home_of in common.lua).
-- Returns: how many were put back.

expect(KEYS[1], 'list')
expect(KEYS[2], 'hash')
expect(MANAGER_OF, 'hash')
local wakes = {}
local count = 0
for i = #ARGV, 1, -1 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) > 0 and put_back(ARGV[i], KEYS[2], KEYS[1], true, wakes) then
    count = count + 1
  end
end
flush_wakes(wakes)
return count
