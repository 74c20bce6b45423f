-- finish.lua: finish jobs a worker completed, without taking any (see take.lua).
--
-- KEYS[1]  <w>:jobs    the worker's list
-- KEYS[2]  qw:origin   held job id -> manager it was taken for
-- ARGV[1]  seconds to note them as finished in qw:finished (0: not at all)
-- ARGV[2..] the finished ids
--
-- For each id that LREM removes from the tail of KEYS[1]: DEL job:<id> and HDEL its
-- origin entry, delete the unique key it holds (see release_unique in common.lua), and
-- note it in qw:finished (see note_finished in common.lua); an id the worker no longer
-- holds (recovered meanwhile) is left alone.
-- Returns: a list of 1/0 per id, 1 if it was held.

expect(KEYS[1], 'list')
expect(KEYS[2], 'hash')
expect(RECOVERIES, 'hash')
return finish(KEYS[1], KEYS[2], 2, has_suspects(), has_uniques(), tonumber(ARGV[1]))
