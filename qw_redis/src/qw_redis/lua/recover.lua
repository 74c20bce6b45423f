-- recover.lua: hand a dead worker's jobs back, one batch per call.
--
-- KEYS[1]  <w>:jobs      the dead worker's list
-- KEYS[2]  <m>:workers   its manager's workers
-- KEYS[3]  qw:origin     held job id -> manager it was taken for ('' = shared queue)
-- KEYS[4]  <m>:jobs      its manager's queue: where jobs sent to the worker directly go
-- KEYS[5]  qw:wake:<m>   the manager's wake list
-- ARGV[1]  the worker's name
-- ARGV[2]  batch size: how many ids to move in this call
--
-- SREM the worker from KEYS[2]; take up to ARGV[2] ids from the tail of KEYS[1] (LRANGE
-- + LTRIM) and, tail first, put each back: a job the worker had taken (it has an origin
-- entry) goes to the front of its origin queue (RPUSH), so what was taken first is first
-- in line again; a job sent to the worker and never taken (no entry) goes to the back of
-- KEYS[4] (LPUSH), oldest first. Origin entries are dropped; wake-up tokens are pushed.
-- The caller repeats until nothing remains.
-- Returns: {moved in this call, ids still on KEYS[1]}.

redis.call('SREM', KEYS[2], ARGV[1])
local batch = tonumber(ARGV[2])
local ids = redis.call('LRANGE', KEYS[1], -batch, -1)
if #ids == 0 then return {0, 0} end
redis.call('LTRIM', KEYS[1], 0, -#ids - 1)
local wakes = {}
for i = #ids, 1, -1 do
  local taken = redis.call('HEXISTS', KEYS[3], ids[i]) == 1
  put_back(ids[i], KEYS[3], KEYS[4], KEYS[5], taken, wakes)
end
flush_wakes(wakes)
return {#ids, redis.call('LLEN', KEYS[1])}
