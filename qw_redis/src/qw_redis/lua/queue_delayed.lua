-- queue_delayed.lua: queue a batch of jobs that wait until they are due.
--
-- KEYS[1]  qw:delayed:<m>  the delayed jobs of the queue the jobs go to (see ARGV[2])
-- KEYS[2]  qw:due          queues with delayed jobs, by their soonest due time
-- KEYS[3]  qw:producer:<token>   the calling producer's last call (see replayed())
-- KEYS[4]  qw:queues       names jobs were queued to by name (ARGV[2] is added, as in queue.lua)
-- ARGV[1]  delay in seconds (more than 0)
-- ARGV[2]  the queue the jobs go to when due: a manager's name, or '' for the shared queue
-- ARGV[3]  the jobs as one JSON array of [id, [field, value, ...], marker] (as in queue.lua)
-- ARGV[4]  the number of this call among the producer's
-- ARGV[5]  when the jobs are due (seconds since the epoch), or '' for now + ARGV[1]
-- ARGV[6]  the jobs' unique keys, as queue.lua's ARGV[5] ('' for none): a job whose key
--          another job holds is not written
--
-- Writes, per job not stored yet (as in queue.lua): job:<id> and qw:job:<id>; then the
-- new ids go into KEYS[1] (delay_jobs in common.lua) at server time + delay, or ARGV[5],
-- plus a microsecond per position, so the batch keeps its order when it comes due. A job
-- stored already is queued, held or delayed (or a same call ran before) and is left
-- alone, as in queue.lua. promote.lua and take.lua move a delayed job to its queue when
-- due. One wake-up token goes to the destination queue's wake list: a taker blocked
-- there looks again and learns the new due time, so it wakes when the job is due, not at
-- the end of its wait.
-- Returns: the number of jobs queued; with ARGV[6], the text queue.lua returns with its
-- ARGV[5].

local unique_call = ARGV[6] ~= nil and ARGV[6] ~= ''
local again
if unique_call then again = replayed_text(KEYS[3], ARGV[4]) else again = replayed(KEYS[3], ARGV[4]) end
if again then return again end
expect(KEYS[1], 'zset')
expect(KEYS[2], 'zset')
if ARGV[2] ~= SHARED_ORIGIN then expect(KEYS[4], 'set') end
local uniques = unique_call and unique_entries(ARGV[6])
local jobs = cjson.decode(ARGV[3])
local due = ARGV[5] ~= '' and tonumber(ARGV[5]) or now() + tonumber(ARGV[1])
local positions, held_by = store_new(jobs, uniques)
local ids, scores = {}, {}
for _, i in ipairs(positions) do
  ids[#ids + 1] = jobs[i][1]
  scores[#scores + 1] = due + (i - 1) / 1000000
end
local queued = #ids
if queued > 0 then
  delay_jobs(ARGV[2], ids, scores, queued)
  if ARGV[2] ~= SHARED_ORIGIN then redis.call('SADD', KEYS[4], ARGV[2]) end
  local _, wkey = queue_of(ARGV[2])
  wake(wkey, 1)
end
if unique_call then
  table.insert(held_by, 1, queued)
  return remember(KEYS[3], ARGV[4], cjson.encode(held_by))
end
return remember(KEYS[3], ARGV[4], queued)
