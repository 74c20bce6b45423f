"""Name rules: each backend owns its rules, one function checks them, and the memory
backend's (the portable ones) stay at least as strict as every backend's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from qw_core import memory
from qw_core.errors import InvalidName
from qw_core.namerules import PORTABLE, NameRules
from qw_postgres import names as postgres_names
from qw_redis import keys

CHECKS: dict[str, Callable[[str], str]] = {
    "memory": memory.check_name,
    "redis": keys.check_name,
    "postgres": postgres_names.check_name,
}


def test_the_memory_backend_is_at_least_as_strict_as_every_backend() -> None:
    # So a name that passes the tests' in-memory broker is never refused by a server.
    for rules in (keys.NAME_RULES, postgres_names.NAME_RULES):
        assert PORTABLE.at_least_as_strict_as(rules)


def test_strictness_is_told_apart() -> None:
    looser = NameRules(max_length=500, forbidden={}, reserved=frozenset({"all"}))
    assert PORTABLE.at_least_as_strict_as(looser)
    assert not looser.at_least_as_strict_as(PORTABLE)
    assert not NameRules(max_length=200, forbidden={":": "keys", "/": "paths"}).at_least_as_strict_as(
        NameRules(max_length=200, forbidden={"|": "pipes"})
    )


@pytest.mark.parametrize("backend", sorted(CHECKS))
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a:b", "':'"),
        ("a\x00b", "control"),
        ("has space", "whitespace"),
        ("all", "reserved"),
        ("x" * 201, "the limit is 200"),
        ("txt\u202eexe", "U\\+202E"),
    ],
)
def test_every_backend_refuses_a_bad_name_with_a_one_line_reason(
    backend: str, name: str, reason: str
) -> None:
    with pytest.raises(InvalidName, match=reason) as caught:
        CHECKS[backend](name)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("backend", sorted(CHECKS))
def test_every_backend_accepts_an_ordinary_name(backend: str) -> None:
    for name in ("web-1", "host.example.com", "m.1a", "x" * 200, "émile"):
        assert CHECKS[backend](name) == name


def test_a_name_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidName, match="must be a string, not int"):
        PORTABLE.check(7)  # type: ignore[arg-type]
