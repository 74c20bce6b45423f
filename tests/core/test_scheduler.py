"""The manager's scheduler on the memory backend, with an injected backend clock: several
managers, downtime, DST days stepped through in minutes, skewed host clocks, a manager
that dies mid-tick, errors, conflicts and withdrawn schedules. No test waits for a tick
except the two that run the thread and a real manager."""

from __future__ import annotations

import datetime
import logging
import time
from collections import Counter
from typing import Any, cast
from zoneinfo import ZoneInfo

import attrs
import pytest
from qwtest_wait import wait_for

from qw_core.broker import Broker
from qw_core.errors import BrokerUnavailable, ConfigurationError, QwError
from qw_core.manager import Manager
from qw_core.memory import MemoryBroker
from qw_core.models import Job, TickResult
from qw_core.scheduler import Scheduler, check_schedules
from qw_core.schedules import Schedule


class Clock:
    """The backend's clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def utc(*parts: int) -> float:
    return datetime.datetime(*parts, tzinfo=datetime.timezone.utc).timestamp()  # type: ignore[misc]


def schedulers(broker: Broker, schedule: Schedule, count: int = 3) -> list[Scheduler]:
    return [
        Scheduler(lambda: broker, manager=f"m{n}", schedules=[schedule], heartbeat=5.0, ttl=30.0)
        for n in range(1, count + 1)
    ]


def ticks_queued(broker: MemoryBroker) -> Counter[float]:
    """How many jobs each tick has among the queued ones."""
    found: Counter[float] = Counter()
    for job_id in broker.queued_job_ids() + broker.queued_job_ids(queue="reports"):
        job = broker.get_job(job_id)
        assert job is not None
        tick = job.meta["tick"]
        assert isinstance(tick, float)
        found[tick] += 1
    return found


def run_for(clock: Clock, broker: Broker, managers: list[Scheduler], *, until: float, step: float) -> None:
    while clock.now < until:
        clock.now += step
        for scheduler in managers:
            scheduler.step(broker)


def test_three_managers_enqueue_each_tick_of_a_per_second_schedule_once() -> None:
    clock = Clock(1000.0)
    broker = MemoryBroker(clock=clock)
    managers = schedulers(broker, Schedule("* * * * * *", id="s"))
    run_for(clock, broker, managers, until=1010.0, step=0.25)
    assert ticks_queued(broker) == Counter({float(t): 1 for t in range(1001, 1011)})
    assert sum(m.enqueued for m in managers) == 10


def test_a_new_schedule_starts_with_its_first_tick_after_the_manager_started() -> None:
    clock = Clock(utc(2026, 1, 1, 12, 0, 30))
    broker = MemoryBroker(clock=clock)
    [manager] = schedulers(broker, Schedule("0 * * * *", id="hourly"), count=1)
    manager.step(broker)
    assert broker.queued_job_ids() == []  # noon's tick was before it started
    run_for(clock, broker, [manager], until=utc(2026, 1, 1, 13, 0, 5), step=60)
    assert list(ticks_queued(broker)) == [utc(2026, 1, 1, 13)]


@pytest.mark.parametrize(
    ("missed", "expected"),
    [("latest", [utc(2026, 1, 1, 18)]), ("all", [utc(2026, 1, 1, h) for h in (16, 17, 18)])],
)
def test_after_every_manager_was_down_a_schedule_runs_its_latest_or_a_bounded_catch_up(
    missed: str, expected: list[float]
) -> None:
    clock = Clock(utc(2026, 1, 1, 9, 59, 58))
    broker = MemoryBroker(clock=clock)
    schedule = Schedule("0 * * * *", id="hourly", missed=missed, catch_up=3)  # type: ignore[arg-type]
    run_for(clock, broker, schedulers(broker, schedule), until=utc(2026, 1, 1, 10, 0, 1), step=1)
    assert list(ticks_queued(broker)) == [utc(2026, 1, 1, 10)]
    for job_id in broker.queued_job_ids():  # drained
        broker.take(manager="m1", worker="m1.1")
        broker.finish_jobs(worker="m1.1", job_ids=[job_id])
    clock.now = utc(2026, 1, 1, 18, 20)  # all down from 10:00:01 to 18:20: ticks 11:00-18:00 missed
    for scheduler in schedulers(broker, schedule):  # the managers start again
        scheduler.step(broker)
    assert sorted(ticks_queued(broker)) == expected


@pytest.mark.parametrize(
    ("zone", "first_day", "change"),
    [
        ("Europe/Paris", (2024, 3, 30), "spring"),
        ("Europe/Paris", (2024, 10, 26), "autumn"),
        ("America/New_York", (2024, 3, 9), "spring"),
        ("America/New_York", (2024, 11, 2), "autumn"),
    ],
)
def test_across_a_clock_change_a_daily_job_runs_once_a_day(
    zone: str, first_day: tuple[int, int, int], change: str
) -> None:
    tz = ZoneInfo(zone)
    start = datetime.datetime(*first_day, 12, 0, tzinfo=tz).timestamp()
    clock = Clock(start)
    broker = MemoryBroker(clock=clock)
    hour = 1 if (zone, change) == ("America/New_York", "autumn") else 2  # a time the change touches
    schedule = Schedule(f"30 {hour} * * *", id="nightly", timezone=zone)
    run_for(clock, broker, schedulers(broker, schedule, count=2), until=start + 3 * 86400, step=60)
    runs = ticks_queued(broker)
    assert set(runs.values()) == {1}
    days = [datetime.datetime.fromtimestamp(t, tz) for t in sorted(runs)]
    assert [d.date() for d in days] == [
        datetime.date(*first_day) + datetime.timedelta(days=n) for n in (1, 2, 3)
    ]
    on_change = days[0]
    if change == "spring":  # 02:30 does not exist that night: at the jump, 03:00 summer time
        assert (on_change.hour, on_change.minute) == (3, 0)
    else:  # 02:30 comes twice: the first time only
        assert (on_change.hour, on_change.minute, on_change.fold) == (hour, 30, 0)
        assert on_change.utcoffset() != days[1].utcoffset()


def test_host_clocks_minutes_off_do_not_move_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each manager's host clock is 7 minutes off (one fast, one slow): ticks are due by the
    # backend's clock, so neither enqueues early and each tick is enqueued once, on time.
    clock = Clock(utc(2026, 1, 1, 12, 0, 0) + 0.5)
    broker = MemoryBroker(clock=clock)
    fast, slow = schedulers(broker, Schedule("*/5 * * * *", id="five"), count=2)
    real_time = time.time
    for scheduler, skew in ((fast, 420.0), (slow, -420.0)):
        monkeypatch.setattr(time, "time", lambda skew=skew: real_time() + skew)
        scheduler.step(broker)
    assert broker.queued_job_ids() == []
    clock.now = utc(2026, 1, 1, 12, 4, 59)  # the fast host thinks it is 12:11:59
    monkeypatch.setattr(time, "time", lambda: real_time() + 420)
    fast.step(broker)
    assert broker.queued_job_ids() == []
    clock.now = utc(2026, 1, 1, 12, 5, 0) + 0.01
    for scheduler, skew in ((slow, -420.0), (fast, 420.0)):
        monkeypatch.setattr(time, "time", lambda skew=skew: real_time() + skew)
        scheduler.step(broker)
    assert ticks_queued(broker) == Counter({utc(2026, 1, 1, 12, 5): 1})
    [job_id] = broker.queued_job_ids()
    job = broker.get_job(job_id)
    assert job is not None
    assert job.queued_at == clock.now  # the backend's time, not a host's


class DiesMidTick:
    """The memory broker, whose ``enqueue_tick`` "kills" its manager: before the call
    reaches the backend, or after the backend ran it and before the reply came back."""

    def __init__(self, inner: MemoryBroker, *, after: bool) -> None:
        self._inner = inner
        self._after = after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        if self._after:
            self._inner.enqueue_tick(schedule_id, tick, job, manager=manager)
        raise SystemExit("killed mid-tick")


@pytest.mark.parametrize("after", [False, True], ids=["before-the-backend", "reply-lost"])
def test_a_manager_killed_mid_tick_leaves_the_tick_to_another_enqueued_once(after: bool) -> None:
    clock = Clock(1000.5)
    broker = MemoryBroker(clock=clock)
    schedule = Schedule("* * * * * *", id="s")
    doomed, survivor = schedulers(broker, schedule, count=2)
    dying = cast(Broker, DiesMidTick(broker, after=after))
    doomed.step(dying)
    survivor.step(broker)
    clock.now = 1001.01
    with pytest.raises(SystemExit):
        doomed.step(dying)
    survivor.step(broker)  # no lock to wait out: the survivor goes on at once
    clock.now = 1002.01
    survivor.step(broker)
    assert ticks_queued(broker) == Counter({1001.0: 1, 1002.0: 1})
    last = broker.tick_states(["s"])["s"]
    assert last.manager == "m2"
    assert survivor.enqueued == (1 if after else 2)


def test_the_thread_survives_errors_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker()
    calls = {"n": 0}
    real_now = broker.now

    def flaky_now() -> float:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise BrokerUnavailable("the server is down")
        if calls["n"] == 3:
            raise RuntimeError("a bug")
        return real_now()

    broker.now = flaky_now  # type: ignore[method-assign]
    scheduler = Scheduler(
        lambda: broker, manager="m1", schedules=[Schedule("* * * * * *", id="s")], heartbeat=0.2, ttl=1.0
    )
    with caplog.at_level(logging.INFO, logger="qw.manager"):
        scheduler.start()
        try:
            wait_for(lambda: scheduler.enqueued >= 1, timeout=20, what="a tick after the errors")
        finally:
            scheduler.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("the scheduler failed, retrying: the server is down" in m for m in messages)
    assert any("the scheduler works again" in m for m in messages)
    assert broker.schedules() == []  # withdrawn as it stopped


def test_one_id_declared_two_ways_warns_and_each_ticks_its_own(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(utc(2026, 1, 1, 12, 0, 1))
    broker = MemoryBroker(clock=clock)
    old = Scheduler(
        lambda: broker, manager="old", schedules=[Schedule("*/10 * * * *", id="sync")], heartbeat=5, ttl=30
    )
    new = Scheduler(
        lambda: broker, manager="new", schedules=[Schedule("*/15 * * * *", id="sync")], heartbeat=5, ttl=30
    )
    with caplog.at_level(logging.WARNING, logger="qw.manager"):
        old.step(broker)
        new.step(broker)
    assert "manager new: manager old declares schedule sync differently" in caplog.text
    assert [s.conflict for s in broker.schedules()] == [True, True]
    run_for(clock, broker, [old, new], until=utc(2026, 1, 1, 12, 31), step=30)
    minutes = sorted(
        datetime.datetime.fromtimestamp(t, datetime.timezone.utc).minute for t in ticks_queued(broker)
    )
    assert minutes == [10, 15, 20, 30]  # the union, each tick time once


def test_a_schedule_removed_from_the_code_stops_and_leaves_the_list() -> None:
    clock = Clock(1000.5)
    broker = MemoryBroker(clock=clock)
    schedule = Schedule("* * * * * *", id="gone")
    [before] = schedulers(broker, schedule, count=1)
    before.step(broker)
    assert [s.id for s in broker.schedules()] == ["gone"]
    before.stop()
    before._withdraw(broker)  # what its thread does as it ends
    after = Scheduler(
        lambda: broker, manager="m1", schedules=[Schedule("* * * * * *", id="kept")], heartbeat=5, ttl=30
    )
    clock.now = 1003.5
    after.step(broker)
    clock.now = 1004.5
    after.step(broker)
    assert [s.id for s in broker.schedules()] == ["kept"]
    assert [broker.get_job(i).meta["schedule"] for i in broker.queued_job_ids()] == ["kept"]  # type: ignore[union-attr]


def test_an_id_twice_in_one_manager_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="declared twice in this manager"):
        check_schedules([Schedule("* * * * *", id="a"), Schedule("0 * * * *", id="a")])


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    monkeypatch.setenv("QWTEST_RECORD_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_a_manager_runs_its_routers_schedule(recorded: Any) -> None:
    from qwtest_targets import read_records

    broker = MemoryBroker()
    manager = Manager(
        "qwtest_targets.periodic:router",
        broker,
        num_workers=1,
        name="periodic",
        heartbeat=0.2,
        heartbeat_ttl=1.0,
    )
    manager.start()
    try:
        found = wait_for(
            lambda: rows if len(rows := read_records(recorded, "tick")) >= 2 else None,
            timeout=20,
            what="two ticks run",
        )
    finally:
        manager.stop()
        assert manager.join(30)
    assert found[0]["tick"] < found[1]["tick"]
    assert {row["schedule"] for row in found} == {"qwtest_targets.periodic:every_second"}


def test_a_manager_with_schedules_needs_a_backend_that_keeps_them() -> None:
    class NoSchedules(MemoryBroker):
        capabilities = attrs.evolve(MemoryBroker.capabilities, schedules=False)

    with pytest.raises(ConfigurationError, match="does not keep periodic jobs"):
        Manager("qwtest_targets:noop", NoSchedules(), num_workers=1, schedules=[Schedule("* * * * *")])
    assert NoSchedules().schedules() == []  # the listing's default: nothing
    with pytest.raises(QwError, match="does not keep periodic jobs"):
        Broker.now(NoSchedules())  # the default of a backend that does not keep them
