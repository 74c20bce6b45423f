"""A process paused (SIGSTOP, a debugger, a VM freeze) in the middle of one of its own
transactions keeps that transaction open, and its locks, for as long as it is paused: a
worker stopped while it registers (its name's lock) or while it fails a job (the job's
row). The reaper must still reap everyone else meanwhile, and the paused worker once the
pause ends; its manager's heartbeat must go on for everyone else; nobody waits for it.

The pause is a connection of the test's own that holds what the paused worker's
transaction holds, left open until the test ends it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from qwtest_postgres import SERVER_URL
from reliability_support import wait_for

from qw_core.broker import Reaped
from qw_core.models import Job
from qw_postgres.broker import PostgresBroker

SHORT_TTL = 0.3


@pytest.fixture
def paused() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """The paused worker's open transaction (rolled back at the end: the pause ends)."""
    conn = psycopg.connect(SERVER_URL)
    yield conn
    conn.rollback()
    conn.close()


def _holding(broker: PostgresBroker, manager: str, worker: str) -> str:
    """``worker`` of ``manager`` holds a new job (its id); their heartbeats last SHORT_TTL."""
    [job_id] = broker.queue_jobs([Job.new({"n": worker}, manager=manager)])
    broker.beat(manager=manager, token="t", workers={worker: "t"}, ttl=SHORT_TTL)
    assert [job.id for job in broker.take(manager=manager, worker=worker)] == [job_id]
    return job_id


@pytest.mark.parametrize("pause", ["registering", "failing a job"])
def test_a_worker_paused_inside_its_own_transaction_holds_up_no_reaper(
    pg_broker: PostgresBroker,
    pg_url: str,
    pg_schema: str,
    paused: psycopg.Connection[tuple[object, ...]],
    pause: str,
) -> None:
    stopped = _holding(pg_broker, "m1", "m1.1")
    dead = _holding(pg_broker, "m2", "m2.1")  # after m1.1 in the reaper's order
    if pause == "registering":  # open_session: the name's lock, then the row
        paused.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{pg_schema}:m1.1"])
    else:  # the FAIL statement of a failing job, before its TRIM and its commit
        paused.execute(f"DELETE FROM {pg_schema}.jobs WHERE id = %s AND holder = 'm1.1'", [stopped])
    wait_for(
        lambda: pg_broker.heartbeat_of("m1.1") is None and pg_broker.heartbeat_of("m2.1") is None,
        what="both heartbeats to lapse",
    )
    reaped: list[Reaped] = []
    reaper = PostgresBroker.from_url(pg_url)
    done = threading.Event()

    def reap() -> None:
        reaped.extend(reaper.reap(owner="test", lease=0, ttl=SHORT_TTL) or [])
        done.set()

    thread = threading.Thread(target=reap, daemon=True)
    thread.start()
    try:
        wait_for(done.is_set, what="the reaper to get past the paused worker")
        assert [r.worker for r in reaped] == ["m2.1"]
        assert pg_broker.queued_job_ids(manager="m2") == [dead]
    finally:
        paused.rollback()  # the pause ends (and a reaper stuck behind it goes on)
        thread.join()
    reaped = reaper.reap(owner="test", lease=0, ttl=SHORT_TTL) or []
    reaper.close()
    assert [(r.worker, r.requeued) for r in reaped] == [("m1.1", 1)]
    assert pg_broker.queued_job_ids(manager="m1") == [stopped]


def _in_thread(call: Callable[[], object]) -> tuple[threading.Thread, threading.Event, list[object]]:
    """Run ``call`` in a daemon thread: the thread, an event set when it returned, its result."""
    returned = threading.Event()
    result: list[object] = []

    def run() -> None:
        result.append(call())
        returned.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, returned, result


def test_a_worker_paused_while_it_registers_holds_up_no_heartbeat(
    pg_broker: PostgresBroker, pg_url: str, pg_schema: str, paused: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Its manager's heartbeat leaves the paused name out and beats for itself and the
    others at once (waiting would let them lapse and be reaped, their jobs run twice);
    the paused one is beaten again once its pause ends."""
    workers = {"m.1": "t", "m.2": "t"}
    pg_broker.beat(manager="m", token="t", workers=workers, ttl=SHORT_TTL)
    wait_for(lambda: pg_broker.heartbeat_of("m") is None, what="the heartbeats to lapse")
    # m.1 stopped right after open_session's first step, its name's lock.
    paused.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{pg_schema}:m.1"])
    beating = PostgresBroker.from_url(pg_url)
    thread, returned, result = _in_thread(
        lambda: beating.beat(manager="m", token="t", workers=workers, ttl=30)
    )
    try:
        wait_for(returned.is_set, what="the heartbeat to return while m.1 is paused")
        assert result == [{"m": None, "m.2": None}], "m.1 left out, the others beaten"
        assert pg_broker.heartbeat_of("m") is not None
        assert pg_broker.heartbeat_of("m.2") is not None
        assert pg_broker.heartbeat_of("m.1") is None
    finally:
        paused.rollback()  # the pause ends
        thread.join()
    assert beating.beat(manager="m", token="t", workers=workers, ttl=30) == {"m.1": None}
    assert pg_broker.heartbeat_of("m.1") is not None
    beating.close()


def test_a_reaper_is_not_held_up_by_a_row_another_transaction_holds(
    pg_broker: PostgresBroker, pg_url: str, pg_schema: str, paused: psycopg.Connection[tuple[object, ...]]
) -> None:
    """The clean-up at the end of a round (managers gone, expired rows) waits a second at
    most for a row a stopped process's transaction holds, and is done once it is free."""
    pg_broker.register_manager("gone")
    pg_broker.beat(manager="gone", token="t", workers={}, ttl=SHORT_TTL)
    wait_for(lambda: pg_broker.heartbeat_of("gone") is None, what="its heartbeat to lapse")
    paused.execute(f"SELECT 1 FROM {pg_schema}.managers WHERE name = 'gone' FOR UPDATE")
    reaper = PostgresBroker.from_url(pg_url)
    thread, returned, result = _in_thread(lambda: reaper.reap(owner="test", lease=0, ttl=SHORT_TTL))
    try:
        wait_for(returned.is_set, what="the reaper's round to end while the row is held")
        assert result == [[]]
        assert "gone" in pg_broker.managers(), "left for a later round"
    finally:
        paused.rollback()
        thread.join()
    assert reaper.reap(owner="test", lease=0, ttl=SHORT_TTL) == []
    assert "gone" not in pg_broker.managers()
    reaper.close()
