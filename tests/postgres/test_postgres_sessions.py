"""Session liveness on PostgreSQL (qw_postgres.sessions): the locks that die with a
connection, read from ``pg_locks`` by the tests; a connection cut by
``pg_terminate_backend``; whole manager groups killed with ``kill -9``.

Heartbeats are written with long TTLs (60 s and more), so that a worker reaped within
the tests' deadlines (well under the TTL) was judged by its sessions. The backend's
contract tests of sessions (qw_core.testing.contract.sessions) run in
test_postgres_contract.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from pg_support import holders, places, queue, start_manager
from qwtest_postgres import SERVER_URL, schema_url
from reliability_support import ManagerProcess, pid_of_began, records, runs, stop_manager, wait_for

from qw_core.broker import Reaped
from qw_core.errors import BrokerUnavailable
from qw_core.models import Job
from qw_postgres import sessions
from qw_postgres.broker import PostgresBroker

_T = TypeVar("_T")

LONG_TTL = 120.0
#: reap's ``ttl`` (its skip after a server start); the heartbeats themselves last LONG_TTL.
REAP_TTL = 0.5


@pytest.fixture
def opened(pg_url: str) -> Iterator[list[PostgresBroker]]:
    """Brokers a test opens as sessions, closed afterwards."""
    brokers: list[PostgresBroker] = []
    yield brokers
    for broker in brokers:
        broker.close()


def _open(url: str, opened: list[PostgresBroker]) -> PostgresBroker:
    broker = PostgresBroker.from_url(url)
    opened.append(broker)
    return broker


def _manager(url: str, opened: list[PostgresBroker], manager: str, *workers: str) -> PostgresBroker:
    broker = _open(url, opened)
    broker.beat(manager=manager, token=f"{manager}-t", workers={w: f"{w}-t" for w in workers}, ttl=LONG_TTL)
    return broker


def _worker(url: str, opened: list[PostgresBroker], manager: str, worker: str) -> PostgresBroker:
    broker = _open(url, opened)
    broker.register_worker(manager=manager, worker=worker)
    return broker


def flagged(schema: str, table: str, name: str) -> bool | None:
    """The ``locked`` flag of ``name``'s row (``None``: no row)."""
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        row = conn.execute(f"SELECT locked FROM {schema}.{table} WHERE name = %s", [name]).fetchone()
    return None if row is None else bool(row[0])


def backend_of(broker: PostgresBroker) -> int:
    conn = broker._conn
    assert conn is not None
    return int(conn.info.backend_pid)


def cut_off(*brokers: PostgresBroker) -> None:
    """End the brokers' server sessions as a network fault or an administrator would, and
    wait until the server has dropped them (their locks with them)."""
    pids = [backend_of(broker) for broker in brokers]
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", [pid])

        def gone() -> bool:
            return not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]).fetchall()

        wait_for(gone, what="the sessions to end")


def reap_until(broker: PostgresBroker, worker: str, timeout: float = 20.0) -> list[Reaped]:
    """Reap (no lease) until ``worker`` is reaped; everything reaped on the way."""
    reaped: list[Reaped] = []
    deadline = time.monotonic() + timeout
    while not any(r.worker == worker for r in reaped):
        assert time.monotonic() < deadline, f"{worker} was not reaped within {timeout}s"
        reaped += broker.reap(owner="test", lease=0, ttl=REAP_TTL) or []
        time.sleep(0.02)
    return reaped


def call_through_outage(call: Callable[[], _T]) -> _T:
    """``call()``, again while it fails as an outage (the first call on a cut connection
    finds it cut; the next opens another)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return call()
        except BrokerUnavailable:
            assert time.monotonic() < deadline, "the broker never came back"


# -- the locks and the flags ---------------------------------------------------------------


def test_a_workers_session_holds_its_lock_until_it_deregisters(
    pg_url: str, pg_schema: str, opened: list[PostgresBroker]
) -> None:
    manager = _manager(pg_url, opened, "m1", "m1.1")
    worker = _worker(pg_url, opened, "m1", "m1.1")
    assert holders(pg_schema, sessions.WORKER_LOCK, "m1.1") == [backend_of(worker)]
    assert holders(pg_schema, sessions.MANAGER_LOCK, "m1") == [backend_of(manager)]
    assert flagged(pg_schema, "workers", "m1.1") is True
    assert flagged(pg_schema, "managers", "m1") is True
    worker.register_worker(manager="m1", worker="m1.1")  # idempotent: still one hold
    worker.deregister_worker(manager="m1", worker="m1.1")
    assert holders(pg_schema, sessions.WORKER_LOCK, "m1.1") == [], "released, not merely counted down"
    assert flagged(pg_schema, "workers", "m1.1") is None
    manager.deregister_manager("m1")
    assert holders(pg_schema, sessions.MANAGER_LOCK, "m1") == []


def test_every_broker_that_beats_for_a_manager_holds_its_lock_at_once(
    pg_url: str, pg_schema: str, opened: list[PostgresBroker]
) -> None:
    main = _manager(pg_url, opened, "m1")
    heartbeat = _manager(pg_url, opened, "m1")
    assert holders(pg_schema, sessions.MANAGER_LOCK, "m1") == sorted(
        [backend_of(main), backend_of(heartbeat)]
    )
    heartbeat.beat(manager="m1", token="m1-t", workers={}, ttl=LONG_TTL)  # held already: not taken twice
    heartbeat.close()
    # The server ends a closed connection's backend (and releases its locks) a moment after
    # the client has let go: wait for that, then the main session must still hold its lock.
    wait_for(
        lambda: holders(pg_schema, sessions.MANAGER_LOCK, "m1") == [backend_of(main)],
        what="the closed session's lock to go, the main one's to stay",
    )


def test_a_worker_cut_off_takes_its_lock_again_before_it_takes_a_job(
    pg_url: str, pg_schema: str, opened: list[PostgresBroker]
) -> None:
    _manager(pg_url, opened, "m1", "m1.1")
    worker = _worker(pg_url, opened, "m1", "m1.1")
    old = backend_of(worker)
    cut_off(worker)
    assert holders(pg_schema, sessions.WORKER_LOCK, "m1.1") == []
    [job_id] = queue(pg_url, [Job.new({"n": 1})])
    taken = call_through_outage(lambda: worker.take(manager="m1", worker="m1.1"))
    assert [job.id for job in taken] == [job_id]
    assert backend_of(worker) != old
    assert holders(pg_schema, sessions.WORKER_LOCK, "m1.1") == [backend_of(worker)]
    assert flagged(pg_schema, "workers", "m1.1") is True


def test_a_manager_cut_off_takes_its_lock_again_with_its_next_beat(
    pg_url: str, pg_schema: str, opened: list[PostgresBroker]
) -> None:
    manager = _manager(pg_url, opened, "m1", "m1.1")
    cut_off(manager)
    assert holders(pg_schema, sessions.MANAGER_LOCK, "m1") == []
    call_through_outage(lambda: manager.beat(manager="m1", token="m1-t", workers={"m1.1": "m1.1-t"}, ttl=60))
    assert holders(pg_schema, sessions.MANAGER_LOCK, "m1") == [backend_of(manager)]


def test_a_reaped_manager_that_beats_again_is_flagged_again(
    pg_url: str, pg_schema: str, opened: list[PostgresBroker]
) -> None:
    manager = _open(pg_url, opened)
    manager.beat(manager="m1", token="m1-t", workers={}, ttl=0.2)
    wait_for(
        lambda: manager.reap(owner="t", lease=0, ttl=0.2) == [] and manager.managers() == [], what="reap"
    )
    assert manager.beat(manager="m1", token="m1-t", workers={}, ttl=LONG_TTL) == {"m1": None}
    assert flagged(pg_schema, "managers", "m1") is True


def test_dead_sessions_are_found_whatever_the_sign_of_their_lock_key(
    pg_url: str, pg_schema: str, opened: list[PostgresBroker]
) -> None:
    # pg_locks shows a key as an unsigned oid; hashtext is a signed integer.
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        [(negative, positive)] = conn.execute(
            "SELECT min(n) FILTER (WHERE h < 0), min(n) FILTER (WHERE h > 0) "
            "FROM (SELECT i AS n, hashtext(%s || i) AS h FROM generate_series(1, 100) i) x",
            [f"{pg_schema}:m1."],
        ).fetchall()
    workers = [f"m1.{negative}", f"m1.{positive}"]
    manager = _manager(pg_url, opened, "m1", *workers)
    sessions_of = [_worker(pg_url, opened, "m1", worker) for worker in workers]
    reaper = _open(pg_url, opened)
    assert reaper.reap(owner="test", lease=0, ttl=REAP_TTL) == [], "all alive"
    for session in [*sessions_of, manager]:
        session.close()
    reaped = reap_until(reaper, workers[0])
    reaped += reap_until(reaper, workers[1]) if workers[1] not in [r.worker for r in reaped] else []
    assert sorted(r.worker for r in reaped) == sorted(workers)


# -- what a fault can and cannot do ----------------------------------------------------------


def test_a_fault_that_cuts_a_worker_and_its_manager_off_runs_a_job_twice_at_most_never_loses_it(
    pg_url: str, pg_schema: str, opened: list[PostgresBroker]
) -> None:
    manager = _manager(pg_url, opened, "m1", "m1.1")
    worker = _worker(pg_url, opened, "m1", "m1.1")
    reaper = _open(pg_url, opened)
    [job_id] = queue(pg_url, [Job.new({"n": 1})])
    [job] = worker.take(manager="m1", worker="m1.1")
    cut_off(worker, manager)  # the window: both sessions gone, neither back yet
    [reaped] = [r for r in reap_until(reaper, "m1.1") if r.worker == "m1.1"]
    assert reaped.requeued == 1
    assert reaper.queued_job_ids() == [job_id], "back in its queue: it will run again"
    # The worker finishes the job it was running: guarded, it changes nothing.
    assert call_through_outage(lambda: worker.finish_jobs(worker="m1.1", job_ids=[job.id])) == [False]
    assert flagged(pg_schema, "workers", "m1.1") is True, "registered again with its lock"
    assert holders(pg_schema, sessions.WORKER_LOCK, "m1.1") == [backend_of(worker)]
    assert reaper.queued_job_ids() == [job_id]
    call_through_outage(lambda: manager.beat(manager="m1", token="m1-t", workers={"m1.1": "m1.1-t"}, ttl=60))
    assert reaper.reap(owner="test", lease=0, ttl=REAP_TTL) == [], "both back: alive"


def test_names_whose_locks_collide_err_on_the_side_of_alive(
    pg_url: str, pg_schema: str, opened: list[PostgresBroker]
) -> None:
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        found = conn.execute(
            "SELECT min(n), max(n) FROM (SELECT i AS n, hashtext(%s || i) AS h "
            "FROM generate_series(1, 400000) i) x GROUP BY h HAVING count(*) > 1 LIMIT 1",
            [f"{pg_schema}:m1."],
        ).fetchone()
    assert found is not None, "no two of 400,000 names collide (about one chance in 10**8)"
    dead, alive = (f"m1.{n}" for n in found)
    control = "m1.0"
    broker = _manager(pg_url, opened, "m1", dead, alive, control)
    dead_session = _worker(pg_url, opened, "m1", dead)
    _worker(pg_url, opened, "m1", alive)
    control_session = _worker(pg_url, opened, "m1", control)
    assert holders(pg_schema, sessions.WORKER_LOCK, dead) == holders(pg_schema, sessions.WORKER_LOCK, alive)
    assert len(holders(pg_schema, sessions.WORKER_LOCK, dead)) == 2, "both hold the one lock, shared"
    dead_session.close()
    control_session.close()
    broker.close()
    reaper = _open(pg_url, opened)
    reaped = reap_until(reaper, control)
    reaped += reaper.reap(owner="test", lease=0, ttl=REAP_TTL) or []
    assert sorted(r.worker for r in reaped) == [control], "the other's hold keeps it: its heartbeat decides"


def test_liveness_heartbeats_in_the_url_takes_no_lock(pg_schema: str, opened: list[PostgresBroker]) -> None:
    url = schema_url(pg_schema, liveness="heartbeats")
    manager = _manager(url, opened, "m1", "m1.1")
    worker = _worker(url, opened, "m1", "m1.1")
    assert not worker.capabilities.session_liveness
    assert PostgresBroker.capabilities.session_liveness, "the class still declares it"
    assert holders(pg_schema, sessions.WORKER_LOCK, "m1.1") == []
    assert holders(pg_schema, sessions.MANAGER_LOCK, "m1") == []
    assert flagged(pg_schema, "workers", "m1.1") is False
    assert flagged(pg_schema, "managers", "m1") is False
    [job_id] = queue(url, [Job.new({"n": 1})])
    assert [job.id for job in worker.take(manager="m1", worker="m1.1")] == [job_id]
    worker.close()
    manager.close()
    reaper = _open(schema_url(pg_schema), opened)
    assert reaper.reap(owner="test", lease=0, ttl=REAP_TTL) == [], "judged by heartbeats alone"
    assert reaper.held_job_ids("m1.1") == [job_id]


def test_a_worker_whose_lock_fails_still_works_judged_by_its_heartbeat(
    pg_url: str,
    pg_schema: str,
    opened: list[PostgresBroker],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = _manager(pg_url, opened, "m1", "m1.1", "m1.2")
    control = _worker(pg_url, opened, "m1", "m1.2")
    monkeypatch.setattr(
        sessions, "TRY_LOCK", "SELECT 1 / (0 * %s::int) = 1 AND %s::text IS NULL"
    )  # an error reply
    with caplog.at_level(logging.WARNING, logger="qw.postgres"):
        worker = _worker(pg_url, opened, "m1", "m1.1")
    assert "worker m1.1: could not take its session lock" in caplog.text
    assert "division by zero" in caplog.text
    assert flagged(pg_schema, "workers", "m1.1") is False
    [job_id] = queue(pg_url, [Job.new({"n": 1})])
    assert [job.id for job in worker.take(manager="m1", worker="m1.1")] == [job_id], "it works"
    worker.close()
    control.close()
    broker.close()
    reaper = _open(pg_url, opened)
    reaped = reap_until(reaper, "m1.2")
    reaped += reaper.reap(owner="test", lease=0, ttl=REAP_TTL) or []
    assert [r.worker for r in reaped] == ["m1.2"]
    assert reaper.held_job_ids("m1.1") == [job_id], "left to its heartbeat"


# -- real processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_manager_group_is_reaped_well_before_its_heartbeats_lapse(
    pg_url: str, record_dir: Path
) -> None:
    ttl = 60.0
    job_ids = queue(pg_url, [Job.new({"sleep": 0.2, "n": n}) for n in range(20)])
    old = ManagerProcess(
        pg_url, "old", "--backend", "postgres", "--heartbeat", "1s", "--heartbeat-ttl", f"{ttl:g}s",
        record_dir=record_dir,
    )  # fmt: skip
    broker = PostgresBroker.from_url(pg_url)
    try:
        wait_for(lambda: len(runs(record_dir)) >= 3, what="some jobs to finish")
        wait_for(
            lambda: (
                len(broker.workers("old")) == 2 and all(broker.held_job_ids(w) for w in broker.workers("old"))
            ),
            what="both workers to hold a job",
        )
        old.signal_group(signal.SIGKILL)
        old.wait()
        killed_at = time.monotonic()
    finally:
        old.close()
    dead_workers = set(broker.workers("old"))
    in_flight = {job_id for worker in dead_workers for job_id in broker.held_job_ids(worker)}
    assert in_flight
    assert len(dead_workers) == 2
    new = start_manager(pg_url, "new", heartbeat=0.2, heartbeat_ttl=ttl, reap_interval=0.2)
    try:
        # Well before the TTL: the lock path, not a lapsed heartbeat, brought them back.
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), what="every job to run", timeout=ttl / 3)
        wait_for(lambda: set(places(pg_url, job_ids).values()) == {"finished"}, what="every job to finish")
        assert time.monotonic() - killed_at < ttl / 2
        assert broker.heartbeat_of("old") is not None, "the dead manager's heartbeat had not lapsed"
    finally:
        stop_manager(new)
        broker.close()
    ran = runs(record_dir)
    assert {job_id for job_id, count in ran.items() if count > 1} <= in_flight
    assert all(count <= 2 for count in ran.values())
    assert {row["worker"] for row in records(record_dir, "reaped")} == dead_workers, "no live worker reaped"


@pytest.mark.slow
def test_live_workers_are_never_reaped_while_another_reaper_looks(pg_url: str, record_dir: Path) -> None:
    job_ids = queue(pg_url, [Job.new({"sleep": 0.05, "n": n}) for n in range(40)])
    manager = start_manager(pg_url, "live", heartbeat=0.2, heartbeat_ttl=LONG_TTL, reap_interval=0.2)
    reaper = PostgresBroker.from_url(pg_url)
    reaped: list[Reaped] = []
    try:
        deadline = time.monotonic() + 60
        while set(runs(record_dir)) != set(job_ids):
            assert time.monotonic() < deadline, "the jobs did not run"
            reaped += reaper.reap(owner="test", lease=0, ttl=REAP_TTL) or []
    finally:
        stop_manager(manager)
        reaper.close()
    assert reaped == []
    assert records(record_dir, "reaped") == []
    assert all(count == 1 for count in runs(record_dir).values())


@pytest.mark.slow
def test_a_stopped_worker_keeps_its_lock_and_is_reaped_when_its_heartbeat_lapses(
    pg_url: str, pg_schema: str, record_dir: Path
) -> None:
    [job_id] = queue(pg_url, [Job.new({"sleep": 1.0})])
    manager = start_manager(pg_url, "st")  # heartbeat 0.2 s, TTL 1 s
    stopped = None
    try:
        stopped = wait_for(lambda: pid_of_began(record_dir, job_id), what="the job to start")
        worker = f"st.{stopped}"
        [holder] = holders(pg_schema, sessions.WORKER_LOCK, worker)
        os.kill(stopped, signal.SIGSTOP)
        wait_for(
            lambda: worker in {row["worker"] for row in records(record_dir, "reaped")},
            what="the stopped worker to be reaped",
        )
        assert holders(pg_schema, sessions.WORKER_LOCK, worker) == [holder], "its session still held its lock"
        wait_for(lambda: pid_of_began(record_dir, job_id, other_than=stopped), what="the job to run again")
        os.kill(stopped, signal.SIGCONT)
        stopped = None
        wait_for(lambda: places(pg_url, [job_id]) == {job_id: "finished"}, what="the job to finish")
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        stop_manager(manager)
    assert runs(record_dir)[job_id] <= 2


@pytest.mark.slow
def test_live_workers_that_crash_and_are_recycled_are_never_reaped(pg_url: str, record_dir: Path) -> None:
    # Workers come and go all along (each crash is settled by the manager, each recycled
    # worker deregisters itself) while another reaper looks without a pause: every worker
    # that lives holds its lock, and its manager holds its own, so none is reaped.
    jobs = [Job.new({"sleep": 0.02, "n": n, **({"crash": 1} if n % 15 == 7 else {})}) for n in range(120)]
    job_ids = queue(pg_url, jobs)
    manager = start_manager(
        pg_url, "live", heartbeat=0.2, heartbeat_ttl=LONG_TTL, reap_interval=0.2, num_workers=3,
        max_jobs_per_worker=4,
    )  # fmt: skip
    reaper = PostgresBroker.from_url(pg_url)
    reaped: list[Reaped] = []
    try:
        deadline = time.monotonic() + 90
        while set(places(pg_url, job_ids).values()) - {"finished", "failed"}:
            assert time.monotonic() < deadline, "the jobs did not run"
            reaped += reaper.reap(owner="test", lease=0, ttl=REAP_TTL) or []
    finally:
        stop_manager(manager)
        reaper.close()
    assert len(records(record_dir, "died")) >= 8, "every crashing job killed its worker"
    assert len({row["pid"] for row in records(record_dir, "began")}) > 30, "workers were recycled"
    assert reaped == []
    # The manager's own reaper may remove a recycled worker that deregistered itself while
    # a heartbeat of its manager's, written as it exited, registered it again: it holds
    # nothing then, so nothing is put back or failed (a known, harmless race; see the notes).
    assert [(r["requeued"], r["failed"]) for r in records(record_dir, "reaped")] == [(0, 0)] * len(
        records(record_dir, "reaped")
    )
    crashing = {job.id for job in jobs if "crash" in job.data}
    assert all(count == 1 for job_id, count in runs(record_dir).items() if job_id not in crashing)
