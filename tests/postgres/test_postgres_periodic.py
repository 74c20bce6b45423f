"""Periodic jobs on PostgreSQL, beyond the contract: callers racing on one tick (the first
one of a schedule too, where two inserts of its row meet), a caller waiting on another's
uncommitted tick, a caller cut off mid-statement, expiry on the database's clock, and two
real ``qw run --backend postgres`` managers enqueueing each tick of a per-second schedule
once. Each test has a schema of its own."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from qwtest_postgres import SERVER_URL
from qwtest_wait import wait_for

from qw_core.errors import BrokerUnavailable
from qw_core.models import Job, TickResult
from qw_core.scheduler import Scheduler
from qw_core.schedules import Schedule, tick_job_id
from qw_postgres import ticks
from qw_postgres.broker import PostgresBroker
from qwtest_targets import read_records

#: A tick: 2026-01-01T00:00:00Z.
TICK = 1767225600.0


def _job(schedule: Schedule, tick: float) -> Job:
    return schedule.job(tick, queued_at=tick)


def _count(url: str, query: str, params: Any = None) -> int:
    with contextlib.closing(PostgresBroker.from_url(url)) as broker:
        conn = broker._connection()
        [(value,)] = conn.execute(query.replace("{s}", broker.schema), params).fetchall()
        return int(value)


def _waiting_on_a_lock(url: str, pid: int) -> bool:
    """Whether the session of backend ``pid`` waits for a lock now."""
    return (
        _count(
            url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid = %s", [pid]
        )
        > 0
    )


def test_a_schedule_whose_unique_key_is_too_long_does_not_stop_the_others(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A unique key of 1,000 emoji passes qw's rules (1,000 characters) but is more than
    PostgreSQL's index holds: that schedule's ticks are refused, and reported, while the
    manager's other schedules tick on (the database's refusal read as an outage stopped
    every schedule of the manager)."""
    rng = random.Random(42)  # no repeats: PostgreSQL cannot compress the entry under its limit
    emoji = "".join(chr(rng.randrange(0x10000, 0x20000)) for _ in range(1000))  # 4,000 bytes
    scheduler = Scheduler(
        lambda: PostgresBroker.from_url(pg_url),
        manager="m1",
        schedules=[
            Schedule("* * * * * *", id="big", meta={"unique": {"key": emoji}}),  # met first in each pass
            Schedule("* * * * * *", id="beat"),
        ],
        heartbeat=0.5,
        ttl=2.0,
    )
    with (
        contextlib.closing(PostgresBroker.from_url(pg_url)) as broker,
        caplog.at_level(logging.WARNING, logger="qw.manager"),
    ):
        scheduler.start()
        try:
            wait_for(lambda: len(broker.queued_job_ids()) >= 2, timeout=15, what="two ticks of 'beat'")
        finally:
            scheduler.stop()
        assert "schedule big: enqueueing its tick failed" in caplog.text
        assert "at most 2000 bytes" in caplog.text
        assert list(broker.tick_states(["big", "beat"])) == ["beat"], "no tick of 'big' recorded"


@pytest.mark.parametrize("rounds", [12])
def test_racing_callers_enqueue_each_tick_once_first_tick_included(pg_url: str, rounds: int) -> None:
    callers = 8
    brokers = [PostgresBroker.from_url(pg_url) for _ in range(callers)]
    try:
        for n in range(rounds):
            schedule_id = f"race-{n}"  # a new schedule each round: the first insert of its row races
            schedule = Schedule("* * * * *", id=schedule_id)
            for tick in (TICK, TICK + 60):
                start = threading.Barrier(callers)

                def call(
                    index: int, schedule: Schedule = schedule, tick: float = tick, start: Any = start
                ) -> TickResult:
                    start.wait(timeout=10)
                    return brokers[index].enqueue_tick(
                        schedule.id, tick, _job(schedule, tick), manager=f"m{index}"
                    )

                with ThreadPoolExecutor(callers) as pool:
                    results = list(pool.map(call, range(callers)))
                winners = [r for r in results if r.enqueued]
                assert len(winners) == 1, results
                [winner] = winners
                assert all(r.last == winner.last for r in results), results  # each reports the same last
                assert winner.last.tick == tick
                job_id = tick_job_id(schedule_id, tick)
                assert _count(pg_url, "SELECT count(*) FROM {s}.jobs WHERE id = %s", [job_id]) == 1
        expected = {tick_job_id(f"race-{n}", t) for n in range(rounds) for t in (TICK, TICK + 60)}
        assert set(brokers[0].queued_job_ids()) == expected
        assert brokers[0].queued_count() == len(expected)
    finally:
        for broker in brokers:
            broker.close()


def _open_tick(url: str, schedule: Schedule, tick: float, manager: str) -> psycopg.Connection[Any]:
    """A connection in a transaction that enqueued ``tick`` and has not committed."""
    with contextlib.closing(PostgresBroker.from_url(url)) as broker:
        schema = broker.schema
        stored = broker._encode_new(_job(schedule, tick))
    conn = psycopg.connect(SERVER_URL)
    result = ticks.enqueue_tick(conn, schema, schedule.id, tick, stored, manager=manager)
    assert result.enqueued
    return conn


@pytest.mark.parametrize("ending", ["commit", "rollback"])
def test_a_caller_waiting_on_an_uncommitted_first_tick_sees_how_it_ended(pg_url: str, ending: str) -> None:
    schedule = Schedule("* * * * *", id="s")
    first = _open_tick(pg_url, schedule, TICK, "ma")  # the schedule's row is new, not committed
    broker = PostgresBroker.from_url(pg_url)
    try:
        pid = broker._connection().info.backend_pid
        results: list[TickResult] = []
        second = threading.Thread(
            target=lambda: results.append(broker.enqueue_tick("s", TICK, _job(schedule, TICK), manager="mb"))
        )
        second.start()
        wait_for(lambda: _waiting_on_a_lock(pg_url, pid), what="the second caller to wait on the first")
        getattr(first, ending)()
        second.join(10)
        [result] = results
        if ending == "commit":
            assert not result.enqueued
            assert (result.last.tick, result.last.manager) == (TICK, "ma")
        else:
            assert result.enqueued
            assert (result.last.tick, result.last.manager) == (TICK, "mb")
        assert broker.queued_job_ids() == [tick_job_id("s", TICK)]
        assert broker.tick_states(["s"]) == {"s": result.last}
    finally:
        first.close()
        broker.close()


def test_a_caller_cut_off_mid_tick_leaves_nothing_and_its_retry_enqueues_once(pg_url: str) -> None:
    schedule = Schedule("* * * * *", id="s")
    broker = PostgresBroker.from_url(pg_url)
    blocker = _open_tick(pg_url, schedule, TICK - 60, "ma")  # holds the schedule's row
    try:
        pid = broker._connection().info.backend_pid
        errors: list[BaseException] = []

        def call() -> None:
            try:
                broker.enqueue_tick("s", TICK, _job(schedule, TICK), manager="mb")
            except BrokerUnavailable as exc:
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        wait_for(lambda: _waiting_on_a_lock(pg_url, pid), what="the caller to wait on the row")
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        caller.join(10)
        assert len(errors) == 1  # its statement died with its connection, mid-step
        blocker.rollback()
        assert broker.tick_states(["s"]) == {}
        assert broker.queued_job_ids() == []
        retried = broker.enqueue_tick("s", TICK, _job(schedule, TICK), manager="mb")
        again = broker.enqueue_tick("s", TICK, _job(schedule, TICK), manager="mb")
        assert retried.enqueued
        assert not again.enqueued
        assert broker.queued_job_ids() == [tick_job_id("s", TICK)]
    finally:
        blocker.close()
        broker.close()


def test_a_tick_job_is_stored_as_queue_jobs_stores_it(pg_url: str) -> None:
    schedule = Schedule("* * * * *", id="mail", queue="emails", data={"to": "ops"}, meta={"timeout": 5})
    job = _job(schedule, TICK)
    with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker:
        broker.enqueue_tick("mail", TICK, job, manager="ma")
        assert broker.get_job(job.id) == job
        assert broker.named_queues() == ["emails"]
        # a job with the tick's id stored already is left as it is; the tick is recorded
        other = Job(id=tick_job_id("mail", TICK + 60), data={"kept": True}, queue="emails")
        broker.queue_jobs([other])
        result = broker.enqueue_tick("mail", TICK + 60, _job(schedule, TICK + 60), manager="ma")
        assert result.enqueued
        assert broker.get_job(other.id) == other
        assert broker.queued_job_ids(queue="emails") == [job.id, other.id]


def test_last_ticks_and_declarations_expire_on_the_database_clock(pg_url: str) -> None:
    schedule = Schedule("* * * * *", id="s")
    with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker:
        conn, s = broker._connection(), broker.schema
        broker.enqueue_tick("s", TICK, _job(schedule, TICK), manager="ma")
        [(left,)] = conn.execute(f"SELECT expires - {s}.now_s() FROM {s}.ticks").fetchall()
        assert ticks.REFRESH < left <= ticks.KEEP
        # a declaration keeps a last tick that would soon be forgotten, and reads it
        conn.execute(f"UPDATE {s}.ticks SET expires = {s}.now_s() + 60")
        states = broker.declare_schedules(manager="ma", declarations={"s": schedule.declaration()}, ttl=30)
        assert states["s"] is not None
        assert states["s"].tick == TICK
        [(left,)] = conn.execute(f"SELECT expires - {s}.now_s() FROM {s}.ticks").fetchall()
        assert left > ticks.REFRESH
        # one that lapsed counts as none: listed nowhere, and any tick may follow it
        conn.execute(f"UPDATE {s}.ticks SET expires = {s}.now_s() - 1")
        assert broker.tick_states(["s"]) == {}
        assert broker.declare_schedules(manager="ma", declarations={"s": schedule.declaration()}, ttl=30) == {
            "s": None
        }
        assert broker.enqueue_tick("s", TICK - 60, _job(schedule, TICK - 60), manager="mb").enqueued
        # the reaper's sweep deletes lapsed declarations and forgotten ticks
        conn.execute(f"UPDATE {s}.ticks SET expires = {s}.now_s() - 1")
        conn.execute(f"UPDATE {s}.declarations SET expires = {s}.now_s() - 1")
        assert broker.schedule_declarations() == {}
        broker.reap(owner="ma", lease=0, ttl=0)
        assert _count(pg_url, "SELECT count(*) FROM {s}.ticks") == 0
        assert _count(pg_url, "SELECT count(*) FROM {s}.declarations") == 0


# -- real managers ---------------------------------------------------------------------------

SCHEDULE_ID = "every-second"


@pytest.fixture
def records(tmp_path: Path) -> Path:
    found = tmp_path / "records"
    found.mkdir()
    return found


@pytest.fixture
def qw_run(pg_url: str, records: Path, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Starts ``qw run --backend postgres`` with a per-second schedule that catches up on
    every missed tick (so none may be missing); kills what is left at the end."""
    schedules = tmp_path / "schedules.json"
    entry = {"id": SCHEDULE_ID, "cron": "* * * * * *", "missed": "all", "catch_up": 60, "data": {"n": 1}}
    schedules.write_text(json.dumps([entry]), encoding="utf-8")
    started: list[subprocess.Popen[bytes]] = []
    for name in ("pa", "pb"):
        command = [sys.executable, "-m", "qw_cli", "run", "--backend", "postgres", "--url", pg_url]
        command += ["-n", name, "-w", "1", "--heartbeat", "0.2s", "--heartbeat-ttl", "1s"]
        command += ["--schedules", str(schedules), "qwtest_targets.periodic:record_tick"]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
        environ.update(QWTEST_RECORD_DIR=str(records), PYTHONUNBUFFERED="1")
        log = (records / f"manager-{name}.log").open("wb")
        started.append(
            subprocess.Popen(
                command, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _ticks_run(records: Path) -> Counter[float]:
    rows = read_records(records, "tick")
    for row in rows:
        assert row["job_id"] == tick_job_id(SCHEDULE_ID, row["tick"]), row
    return Counter(float(row["tick"]) for row in rows)


@pytest.mark.slow
def test_two_managers_enqueue_each_tick_of_a_per_second_schedule_once(
    pg_url: str, records: Path, qw_run: list[subprocess.Popen[bytes]]
) -> None:
    wait_for(lambda: len(_ticks_run(records)) >= 5, timeout=40, what="5 ticks to run")
    with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker:
        declared = broker.schedule_declarations()
        assert set(declared) == {"pa", "pb"}
        [listed] = broker.schedules()
        assert listed.id == SCHEDULE_ID
        assert listed.declared_by == ("pa", "pb")
        for process in qw_run:
            os.killpg(process.pid, signal.SIGTERM)
        logs = [(records / f"manager-{name}.log").read_text(errors="replace") for name in ("pa", "pb")]
        assert all(process.wait(timeout=30) == 0 for process in qw_run), logs
        assert broker.schedule_declarations() == {}  # withdrawn as they stopped
        last = broker.tick_states([SCHEDULE_ID])[SCHEDULE_ID]
        assert last.manager in {"pa", "pb"}
        enqueued_by = Counter(
            line.split("manager ")[1].split(":")[0]
            for log in logs
            for line in log.splitlines()
            if "enqueued as job" in line
        )
    runs = _ticks_run(records)
    ran = sorted(runs)
    assert ran == [float(t) for t in range(int(ran[0]), int(ran[-1]) + 1)], "a tick is missing"
    assert {tick: n for tick, n in runs.items() if n != 1} == {}, "a tick ran more than once"
    assert sum(enqueued_by.values()) >= len(ran)
    for row in read_records(records, "tick"):
        assert 0 <= row["queued_at"] - row["tick"] < 5, row  # enqueued by the database's clock, on time
