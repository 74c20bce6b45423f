"""The key schema and the name check (no Redis needed)."""

from __future__ import annotations

import fakeredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qw_core.errors import InvalidName
from qw_core.naming import check_manager_name
from qw_redis import keys
from qw_redis.broker import RedisBroker


def test_original_schema_is_kept_exactly() -> None:
    assert keys.ALL_MANAGERS == "all:managers"
    assert keys.ALL_JOBS == "all:jobs"
    assert keys.queue(None) == "all:jobs"
    assert keys.queue("m1") == "m1:jobs"
    assert keys.queue("m1.123") == "m1.123:jobs"
    assert keys.manager_workers("m1") == "m1:workers"
    assert keys.job("abc") == "job:abc"
    assert keys.worker_name("m1", 123) == "m1.123"


def test_qw_keys_live_under_their_own_prefix() -> None:
    assert keys.wake(None) == keys.WAKE_ALL == "qw:wake:all"
    assert keys.wake("m1") == "qw:wake:m1"
    assert keys.failed_job("abc") == "qw:failed:abc"
    assert keys.invalid_job("abc") == "qw:invalid:abc"
    assert keys.delayed(None) == "qw:delayed:all"
    assert keys.delayed("m1") == "qw:delayed:m1"
    for key in (keys.ORIGIN, keys.DUE, keys.LEGACY_DELAYED, keys.FAILED):
        assert key.startswith("qw:")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a:b", "':'"),
        ("has space", "whitespace"),
        ("tab\there", "whitespace"),
        ("nl\n", "whitespace"),
        ("nbsp\u00a0", "whitespace"),
        ("bell\x07", "control"),
        ("del\x7f", "control"),
        ("c1\x85", "whitespace"),
        ("all", "reserved"),
        ("job", "reserved"),
        ("qw", "reserved"),
        ("x" * 201, "200"),
        ("zero\u200bwidth", "U\\+200B \\(an invisible or text-direction character\\)"),
        ("txt\u202eexe", "U\\+202E"),
        ("bom\ufeff", "U\\+FEFF"),
        ("not-utf8\udcff", "not UTF-8"),
    ],
)
def test_bad_names_are_refused_with_a_one_line_reason(name: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=reason) as caught:
        keys.check_name(name)
    assert "\n" not in str(caught.value)


def test_a_name_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidName, match="string"):
        keys.check_name(7)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["m1", "host.example.com", "m1.4242", "ALL", "jobs", "qw.1", "é", "x" * 200])
def test_good_names_are_accepted(name: str) -> None:
    assert keys.check_name(name) == name


@given(st.text(min_size=1, max_size=30))
def test_keys_of_a_valid_name_never_collide_with_the_schema(name: str) -> None:
    try:
        keys.check_name(name)
    except InvalidName:
        return
    fixed = {keys.ALL_MANAGERS, keys.ALL_JOBS, keys.ORIGIN, keys.DUE, keys.FAILED, keys.WAKE_ALL}
    for key in (keys.queue(name), keys.manager_workers(name)):
        assert key not in fixed
        assert not key.startswith(("qw:", "job:", "all:"))
        assert key.count(":") == 1
    assert keys.wake(name) != keys.WAKE_ALL
    assert keys.delayed(name) not in (keys.delayed(None), keys.LEGACY_DELAYED)


def test_lua_prelude_spells_the_same_patterns() -> None:
    prelude = keys.LUA_PRELUDE
    assert "local ALL_JOBS = 'all:jobs'" in prelude
    assert "return 'job:' .. id" in prelude
    assert "return name .. ':jobs'" in prelude
    assert "return 'qw:wake:' .. name" in prelude


@given(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12), st.integers(0, 2**22))
def test_no_managers_keys_are_a_workers(manager: str, other: str, pid: int) -> None:
    # A worker of any manager is named <other>.<pid>; no valid manager name is one.
    broker = RedisBroker(fakeredis.FakeRedis())
    try:
        check_manager_name(broker, manager)
        worker = keys.worker_name(keys.check_name(other), pid)
    except InvalidName:
        return
    assert keys.queue(manager) != keys.queue(worker)
    assert keys.heartbeat(manager) != keys.heartbeat(worker)
    assert keys.wake(manager) != keys.wake(worker)


def test_a_manager_named_like_a_worker_would_share_its_keys() -> None:
    # Why such names are refused (test_naming): the keys are the same.
    assert keys.queue("m.123") == keys.queue(keys.worker_name("m", 123))
    assert keys.heartbeat("m.123") == keys.heartbeat(keys.worker_name("m", 123))
    broker = RedisBroker(fakeredis.FakeRedis())
    with pytest.raises(InvalidName, match="worker 123 of manager 'm'"):
        check_manager_name(broker, "m.123")
