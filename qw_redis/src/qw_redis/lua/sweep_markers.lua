-- sweep_markers.lua: drop the markers of jobs an original qw worker finished.
--
-- KEYS[1..]  qw:job:<id> keys a SCAN found
--
-- An original (2014) worker finishes a job by deleting job:<id>; it knows nothing of the
-- marker beside it (qw:job:<id>, see qw_redis/codec.py), which would stay for ever. A
-- marker whose job keeps its data in the hash (fields listed in `keys`, or the single
-- data field: no `keys` at all) and whose hash is gone belongs to no job any more: such a
-- job was finished, or lost its data (and is unreadable either way). A marker of an
-- empty dict (`keys` empty: no hash ever) is left alone, as is anything that does not
-- decode, and anything that is not a marker key. Each key is checked and deleted in this
-- one step, so a job queued meanwhile is never touched.
-- Returns: how many markers were deleted.

local uniques = has_uniques()
local swept = 0
for _, key in ipairs(KEYS) do
  local id = string.sub(key, #JOB_MARKER_PREFIX + 1)
  if marker_key(id) == key and redis.call('EXISTS', job_key(id)) == 0 then
    local text = redis.pcall('GET', key)
    if type(text) == 'string' then
      local ok, marker = pcall(cjson.decode, text)
      if ok and type(marker) == 'table' and (marker.keys == nil or #marker.keys > 0) then
        redis.call('DEL', key)
        if uniques then release_unique(id) end  -- the job is over: so is its unique key
        swept = swept + 1
      end
    end
  end
end
return swept
