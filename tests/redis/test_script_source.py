"""What is sent to Redis for each script: the prelude's and common.lua's definitions that
the script uses (Redis runs all of a script's text on every call), and no others."""

from __future__ import annotations

import pytest

from qw_redis.scripts import script_source, used_helpers

HELPERS = """\
-- a comment between definitions
local PREFIX = 'p:'
local function key(name) return PREFIX .. name end
local function unused(x) return x end
local cache
local function fill()
  if cache == nil then cache = key('c') end

  return cache
end
"""


def test_a_script_gets_the_helpers_it_uses_and_those_they_use_in_their_order() -> None:
    kept = used_helpers(HELPERS, "return fill()")
    assert kept == (
        "local PREFIX = 'p:'\n"
        "local function key(name) return PREFIX .. name end\n"
        "local cache\n"
        "local function fill()\n"
        "  if cache == nil then cache = key('c') end\n"
        "\n"
        "  return cache\n"
        "end\n"
    )


def test_a_helper_named_only_in_a_comment_line_is_left_out() -> None:
    assert used_helpers(HELPERS, "-- unused() is not called\n  -- nor key()\nreturn 1") == ""
    assert "unused" in used_helpers(HELPERS, "return 1  -- after code, unused() counts")


def test_a_helper_file_line_outside_a_definition_is_refused() -> None:
    with pytest.raises(ValueError, match="not part of a definition"):
        used_helpers(HELPERS + "redis.call('DEL', 'x')\n", "return 1")


def test_each_script_carries_what_it_uses_and_not_the_rest() -> None:
    queue = script_source("queue.lua")
    assert "local function store_new(" in queue
    assert "local function expect(" in queue
    assert "local function promote_due(" not in queue
    assert "local function finish(" not in queue
    take = script_source("take.lua")
    assert "local function promote_due(" in take
    assert "local function finish(" in take
