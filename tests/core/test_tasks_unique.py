"""Unique task calls (``@router.task(unique=True)``, ``.options(unique=...)``) on the memory
broker: the task and its arguments as the key, a key of one's own, the modes, and the
handle saying whether the call was queued."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qw_core.errors import ConfigurationError
from qw_core.tasks import Router
from qw_core.testing import MemoryBroker, run_jobs
from qw_core.unique import Unique, call_key


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


@pytest.fixture
def router(broker: MemoryBroker) -> Router:
    return Router(broker=broker)


def test_a_unique_task_queues_one_call_per_arguments(router: Router, broker: MemoryBroker) -> None:
    @router.task(name="sync", unique=True)
    def sync(user: int, full: bool = False) -> None:
        pass

    first = sync.enqueue(42)
    assert first.created
    for same in (
        sync.enqueue(42),
        sync.enqueue(user=42),
        sync.enqueue(42, False),
        sync.enqueue(42, full=False),
    ):
        assert same.id == first.id, "the same call, however its arguments are spelt"
        assert not same.created
    other = sync.enqueue(42, full=True)
    assert other.created
    assert sync.enqueue(7).created
    assert len(broker.queued_job_ids()) == 3
    job = broker.get_job(first.id)
    assert job is not None
    assert job.meta["unique"] == {"key": call_key("sync", {"user": 42, "full": False}), "until": "end"}


def test_the_key_is_free_again_once_the_call_ran(router: Router, broker: MemoryBroker) -> None:
    @router.task(name="report", unique=True)
    def report(month: str) -> None:
        pass

    first = report.enqueue("2026-01")
    run_jobs(broker, router)
    again = report.enqueue("2026-01")
    assert again.created
    assert again.id != first.id


def test_options_give_a_key_a_mode_or_turn_uniqueness_off(router: Router, broker: MemoryBroker) -> None:
    @router.task(name="ping")
    def ping(host: str) -> None:
        pass

    keyed = ping.options(unique="one-ping")
    first = keyed.enqueue("a")
    assert keyed.enqueue("b").id == first.id, "one key for every call"
    assert ping.enqueue("a").created, "the task itself is not unique"
    start = ping.options(unique=Unique(until="start"))
    waiting = start.enqueue("c")
    assert start.enqueue("c").id == waiting.id
    assert ping.options(unique=True).options(unique=False).enqueue("c").id != waiting.id
    throttle = ping.options(unique=Unique(ttl=60))
    t = throttle.enqueue("d")
    job = broker.get_job(t.id)
    assert job is not None
    assert job.meta["unique"]["until"] == "ttl"  # type: ignore[index]


@pytest.mark.parametrize("bad", ["", 3, 1.5, "x" * 1001])
def test_a_bad_unique_setting_is_refused_when_the_task_is_made(router: Router, bad: object) -> None:
    with pytest.raises(ConfigurationError):

        @router.task(name="bad", unique=bad)  # type: ignore[call-overload]
        def bad_task() -> None:
            pass
