"""The broker contract, in part: periodic jobs (``capabilities.schedules``).

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
The promise under test: each tick of a schedule is enqueued once however many managers
try at once, a retried call changes nothing, ticks only move forward, and only what a
running manager declares is listed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qw_core.broker import Broker
from qw_core.errors import ConfigurationError, InvalidJob, UniqueJobsUnsupported
from qw_core.models import Job, TickResult
from qw_core.schedules import Schedule, tick_job_id
from qw_core.testing import MANAGER, OTHER_MANAGER, WORKER, opened
from qw_core.testing.contract.base import ContractPart
from qw_core.unique import Queued

#: A tick: 2026-01-01T00:00:00Z.
TICK = 1767225600.0


def _job(schedule: Schedule, tick: float) -> Job:
    return schedule.job(tick, queued_at=tick)


class PeriodicContract(ContractPart):
    """Ticks enqueued once, declarations, the backend's clock."""

    @pytest.fixture
    def scheduling(self, broker: Broker) -> Broker:
        if not broker.capabilities.schedules:
            pytest.skip("the backend does not keep periodic jobs (capabilities.schedules is false)")
        return broker

    def test_a_tick_is_recorded_and_its_job_queued(self, scheduling: Broker) -> None:
        schedule = Schedule("* * * * *", data={"report": "daily"}, id="report")
        result = scheduling.enqueue_tick("report", TICK, _job(schedule, TICK), manager=MANAGER)
        assert result.enqueued
        assert (result.last.tick, result.last.manager) == (TICK, MANAGER)
        assert result.last.job_id == tick_job_id("report", TICK)
        assert scheduling.queued_job_ids() == [result.last.job_id]
        [taken] = scheduling.take(manager=MANAGER, worker=WORKER)
        assert taken.data == {"report": "daily"}
        assert taken.meta["schedule"] == "report"
        assert taken.meta["tick"] == TICK
        assert scheduling.tick_states(["report", "other"]) == {"report": result.last}

    def test_the_same_tick_again_is_a_no_op_that_says_it_is_done(self, scheduling: Broker) -> None:
        # A call retried after a timeout whose first attempt went through, or another manager's.
        schedule = Schedule("* * * * *", id="s")
        first = scheduling.enqueue_tick("s", TICK, _job(schedule, TICK), manager=MANAGER)
        again = scheduling.enqueue_tick("s", TICK, _job(schedule, TICK), manager=OTHER_MANAGER)
        assert first.enqueued
        assert not again.enqueued
        assert again.last == first.last  # by the first manager
        assert scheduling.queued_job_ids() == [first.last.job_id]

    def test_ticks_only_move_forward(self, scheduling: Broker) -> None:
        schedule = Schedule("* * * * *", id="s")
        assert scheduling.enqueue_tick("s", TICK + 60, _job(schedule, TICK + 60), manager=MANAGER).enqueued
        older = scheduling.enqueue_tick("s", TICK, _job(schedule, TICK), manager=MANAGER)
        assert not older.enqueued
        assert older.last.tick == TICK + 60
        assert scheduling.queued_job_ids() == [tick_job_id("s", TICK + 60)]
        assert scheduling.enqueue_tick("s", TICK + 120, _job(schedule, TICK + 120), manager=MANAGER).enqueued
        assert len(scheduling.queued_job_ids()) == 2

    def test_schedules_tick_apart(self, scheduling: Broker) -> None:
        one, two = Schedule("* * * * *", id="one"), Schedule("* * * * *", id="two")
        assert scheduling.enqueue_tick("one", TICK, _job(one, TICK), manager=MANAGER).enqueued
        assert scheduling.enqueue_tick("two", TICK, _job(two, TICK), manager=MANAGER).enqueued
        assert len(scheduling.queued_job_ids()) == 2

    def test_concurrent_managers_enqueue_each_tick_once(self, scheduling: Broker) -> None:
        schedule = Schedule("* * * * *", id="busy")
        ticks = [TICK + 60 * n for n in range(5)]
        start = threading.Barrier(4)

        def manager(name: str) -> list[TickResult]:
            with opened(scheduling.factory()) as own:
                start.wait(timeout=10)
                return [own.enqueue_tick("busy", t, _job(schedule, t), manager=name) for t in ticks]

        with ThreadPoolExecutor(4) as pool:
            results = [r for rs in pool.map(manager, ["ma", "mb", "mc", "md"]) for r in rs]
        enqueued = sorted(r.last.tick for r in results if r.enqueued)
        assert enqueued == ticks  # each tick by exactly one of them
        assert sorted(scheduling.queued_job_ids()) == sorted(tick_job_id("busy", t) for t in ticks)

    def test_a_job_that_cannot_be_stored_records_no_tick(self, scheduling: Broker) -> None:
        bad = Job(id=tick_job_id("s", TICK), data={"x": {1, 2}})  # type: ignore[dict-item]  # not JSON, on purpose
        with pytest.raises(InvalidJob):
            scheduling.enqueue_tick("s", TICK, bad, manager=MANAGER)
        assert scheduling.tick_states(["s"]) == {}
        assert scheduling.queued_job_ids() == []

    @pytest.mark.parametrize("tick", [float("nan"), float("inf"), float("-inf")])
    def test_a_tick_that_is_not_a_finite_number_is_refused_and_records_nothing(
        self, scheduling: Broker, tick: float
    ) -> None:
        job = Job(id=tick_job_id("s", TICK), data={})
        with pytest.raises(ConfigurationError, match="finite"):
            scheduling.enqueue_tick("s", tick, job, manager=MANAGER)
        assert scheduling.tick_states(["s"]) == {}
        assert scheduling.queued_job_ids() == []
        assert scheduling.enqueue_tick("s", TICK, job, manager=MANAGER).enqueued

    def test_the_tick_of_a_unique_job_honours_its_key(self, scheduling: Broker) -> None:
        """A schedule on a task declared unique: while the job of an earlier tick (or any
        job) holds the key, a tick queues nothing and records the holder as its job; a
        backend that keeps no unique jobs refuses the tick, recording nothing."""
        schedule = Schedule("* * * * *", id="sync", meta={"unique": {"key": "sync", "until": "end"}})
        if not scheduling.capabilities.unique:
            with pytest.raises(UniqueJobsUnsupported):
                scheduling.enqueue_tick("sync", TICK, _job(schedule, TICK), manager=MANAGER)
            assert scheduling.tick_states(["sync"]) == {}
            assert scheduling.queued_job_ids() == []
            return
        first = scheduling.enqueue_tick("sync", TICK, _job(schedule, TICK), manager=MANAGER)
        assert first.enqueued
        assert first.last.job_id == tick_job_id("sync", TICK)
        held = scheduling.enqueue_tick("sync", TICK + 60, _job(schedule, TICK + 60), manager=MANAGER)
        assert held.enqueued, "the tick is recorded (not tried again)"
        assert (held.last.tick, held.last.job_id) == (TICK + 60, tick_job_id("sync", TICK))
        assert scheduling.queued_job_ids() == [tick_job_id("sync", TICK)], "one job while the key is held"
        assert scheduling.get_job(tick_job_id("sync", TICK + 60)) is None
        again = scheduling.queue_job_unique(Job.new({"by": "hand"}), "sync")
        assert again == Queued(tick_job_id("sync", TICK), False), "the tick's job holds the key"
        [taken] = scheduling.take(manager=MANAGER, worker=WORKER)
        assert scheduling.finish_jobs(worker=WORKER, job_ids=[taken.id]) == [True]
        later = scheduling.enqueue_tick("sync", TICK + 120, _job(schedule, TICK + 120), manager=MANAGER)
        assert later.last.job_id == tick_job_id("sync", TICK + 120)
        assert scheduling.queued_job_ids() == [tick_job_id("sync", TICK + 120)], "the key is free again"

    def test_a_tick_goes_to_the_schedule_queue(self, scheduling: Broker) -> None:
        schedule = Schedule("* * * * *", id="mail", queue="emails")
        scheduling.enqueue_tick("mail", TICK, _job(schedule, TICK), manager=MANAGER)
        assert scheduling.queued_job_ids(queue="emails") == [tick_job_id("mail", TICK)]
        assert scheduling.queued_job_ids() == []

    def test_the_backend_clock_is_wall_time(self, scheduling: Broker) -> None:
        assert abs(scheduling.now() - time.time()) < 60

    # -- declarations --------------------------------------------------------------------

    def test_only_declared_schedules_are_listed(self, scheduling: Broker) -> None:
        daily = Schedule("0 3 * * *", id="daily", timezone="Europe/Paris", queue="reports")
        assert scheduling.schedules() == []
        states = scheduling.declare_schedules(
            manager=MANAGER, declarations={"daily": daily.declaration()}, ttl=30
        )
        assert states == {"daily": None}
        [listed] = scheduling.schedules()
        assert (listed.id, listed.cron, listed.timezone, listed.queue) == (
            "daily",
            "0 3 * * *",
            "Europe/Paris",
            "reports",
        )
        assert listed.declared_by == (MANAGER,)
        assert listed.last_run is None
        assert listed.next_run is not None
        assert listed.next_run > scheduling.now()
        assert not listed.conflict
        scheduling.enqueue_tick("daily", TICK, _job(daily, TICK), manager=OTHER_MANAGER)
        [listed] = scheduling.schedules()
        assert (listed.last_run, listed.last_manager) == (TICK, OTHER_MANAGER)
        again = scheduling.declare_schedules(
            manager=MANAGER, declarations={"daily": daily.declaration()}, ttl=30
        )
        assert again["daily"] is not None
        assert again["daily"].tick == TICK

    def test_a_withdrawn_schedule_is_not_listed(self, scheduling: Broker) -> None:
        one = Schedule("* * * * *", id="one")
        scheduling.declare_schedules(manager=MANAGER, declarations={"one": one.declaration()}, ttl=30)
        scheduling.declare_schedules(manager=MANAGER, declarations={}, ttl=30)
        assert scheduling.schedules() == []
        assert scheduling.schedule_declarations() == {}

    def test_a_declaration_lapses_after_its_ttl(self, scheduling: Broker) -> None:
        one = Schedule("* * * * *", id="one")
        scheduling.declare_schedules(manager=MANAGER, declarations={"one": one.declaration()}, ttl=0.3)
        assert [s.id for s in scheduling.schedules()] == ["one"]
        deadline = time.monotonic() + 10
        while scheduling.schedules() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scheduling.schedules() == []

    def test_a_redeclaration_replaces_the_last(self, scheduling: Broker) -> None:
        one, two = Schedule("* * * * *", id="one"), Schedule("* * * * *", id="two")
        scheduling.declare_schedules(manager=MANAGER, declarations={"one": one.declaration()}, ttl=30)
        scheduling.declare_schedules(manager=MANAGER, declarations={"two": two.declaration()}, ttl=30)
        assert scheduling.schedule_declarations() == {MANAGER: {"two": two.declaration()}}

    def test_one_id_declared_two_ways_is_listed_twice_as_a_conflict(self, scheduling: Broker) -> None:
        old, new = Schedule("*/10 * * * *", id="sync"), Schedule("*/15 * * * *", id="sync")
        scheduling.declare_schedules(manager=MANAGER, declarations={"sync": old.declaration()}, ttl=30)
        scheduling.declare_schedules(manager=OTHER_MANAGER, declarations={"sync": new.declaration()}, ttl=30)
        listed = scheduling.schedules()
        assert [(s.cron, s.declared_by, s.conflict) for s in listed] == [
            ("*/10 * * * *", (MANAGER,), True),
            ("*/15 * * * *", (OTHER_MANAGER,), True),
        ]
