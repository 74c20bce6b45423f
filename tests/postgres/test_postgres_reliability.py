"""The reliability suite's faults on PostgreSQL: a worker killed mid-job, a manager group
killed, a poison job, time limits, warm and cold stops, and a PostgreSQL restart while a
queue drains (on a private cluster). Test-sized timings (heartbeat 0.2 s, TTL 1 s); every
test ends with each job in exactly one place, read through the broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_support import holders, places, queue, start_manager
from qwtest_postgres import PrivatePostgres, fresh_schema, schema_url
from reliability_support import ManagerProcess, pid_of_began, records, runs, stop_manager, wait_for

from qw_core.broker import Reaped
from qw_core.errors import BrokerUnavailable
from qw_core.models import Job
from qw_postgres import sessions
from qw_postgres.broker import PostgresBroker

pytestmark = [pytest.mark.slow]


def test_a_worker_killed_mid_job_gives_its_job_back_which_then_finishes_once(
    pg_url: str, record_dir: Path
) -> None:
    [job_id] = queue(pg_url, [Job.new({"sleep": 0.5})])
    manager = start_manager(pg_url, "k1")
    broker = PostgresBroker.from_url(pg_url)
    try:
        victim = wait_for(lambda: pid_of_began(record_dir, job_id), what="the job to start")
        dead = f"k1.{victim}"
        assert broker.held_job_ids(dead) == [job_id]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: pid_of_began(record_dir, job_id, other_than=victim), what="the job to run again")
        wait_for(lambda: runs(record_dir)[job_id] == 1 and broker.get_job(job_id) is None, what="finish")
        assert broker.held_job_ids(dead) == []
        assert dead not in broker.workers("k1")
        assert broker.heartbeat_of(dead) is None
    finally:
        stop_manager(manager)
        broker.close()
    assert runs(record_dir, "began")[job_id] == 2
    assert runs(record_dir)[job_id] == 1
    assert places(pg_url, [job_id]) == {job_id: "finished"}


def test_a_killed_manager_group_is_reaped_by_a_new_manager(pg_url: str, record_dir: Path) -> None:
    job_ids = queue(pg_url, [Job.new({"sleep": 0.2, "n": n}) for n in range(20)])
    old = ManagerProcess(pg_url, "old", "--backend", "postgres", record_dir=record_dir)
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
    finally:
        old.close()
    dead_workers = set(broker.workers("old"))
    in_flight = {job_id for worker in dead_workers for job_id in broker.held_job_ids(worker)}
    assert in_flight
    assert len(dead_workers) == 2
    # Its session locks tell the dead group at once; a TTL of 5 s, not the 1 s of the other
    # tests, keeps a machine busy with other tests from letting the new manager's own
    # heartbeats lapse (its reaper would then take its live workers for dead).
    new = start_manager(pg_url, "new", heartbeat_ttl=5.0)
    try:
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), what="every job to run")
        wait_for(lambda: broker.managers() == ["new"], what="the dead manager to go")
        wait_for(lambda: set(places(pg_url, job_ids).values()) == {"finished"}, what="every job to finish")
    finally:
        stop_manager(new)
        broker.close()
    ran = runs(record_dir)
    assert {job_id for job_id, count in ran.items() if count > 1} <= in_flight
    assert all(count <= 2 for count in ran.values())
    assert {row["worker"] for row in records(record_dir, "reaped")} == dead_workers


def test_a_job_that_kills_its_worker_is_failed_after_the_limit_while_others_finish(
    pg_url: str, record_dir: Path
) -> None:
    poison = Job.new({"crash": True})
    others = [Job.new({"n": n}) for n in range(50)]
    job_ids = queue(pg_url, [poison, *others])
    manager = start_manager(pg_url, "p1", max_recoveries=2)
    broker = PostgresBroker.from_url(pg_url)
    try:
        [entry] = wait_for(broker.failed_jobs, what="the poison job to fail")
        wait_for(lambda: len(runs(record_dir)) == len(others), what="the others")
    finally:
        stop_manager(manager)
        broker.close()
    assert (entry.job.id, entry.job.data, entry.failure.kind) == (poison.id, {"crash": True}, "crashed")
    assert runs(record_dir, "began")[poison.id] == 3, "run once, put back twice"
    assert all(count == 1 for count in runs(record_dir).values())
    where = places(pg_url, job_ids)
    assert where.pop(poison.id) == "failed"
    assert set(where.values()) == {"finished"}


def test_a_job_past_its_time_limit_is_failed_and_its_worker_replaced(pg_url: str, record_dir: Path) -> None:
    slow = Job.new({"sleep": 60}, meta={"timeout": 0.3})
    quick = [Job.new({"n": n}) for n in range(5)]
    job_ids = queue(pg_url, [slow, *quick])
    manager = start_manager(pg_url, "tl")
    broker = PostgresBroker.from_url(pg_url)
    try:
        [entry] = wait_for(broker.failed_jobs, what="the timeout")
        wait_for(lambda: len(runs(record_dir)) == 5, what="the quick jobs")
    finally:
        stop_manager(manager)
        broker.close()
    assert (entry.job.id, entry.failure.kind) == (slow.id, "timeout")
    assert "0.3s limit" in entry.failure.message
    assert sorted(places(pg_url, job_ids).values()) == ["failed"] + ["finished"] * 5


@pytest.fixture
def run_qw(pg_url: str, record_dir: Path) -> Iterator[list[ManagerProcess]]:
    started: list[ManagerProcess] = []
    yield started
    for process in started:
        process.close()


def test_a_warm_stop_lets_the_running_job_finish_and_takes_nothing_new(
    pg_url: str, record_dir: Path, run_qw: list[ManagerProcess]
) -> None:
    running, waiting = Job.new({"sleep": 1.0}), Job.new({"n": 1})
    job_ids = queue(pg_url, [running, waiting])
    manager = ManagerProcess(pg_url, "sd", "--backend", "postgres", record_dir=record_dir, workers=1)
    run_qw.append(manager)
    wait_for(lambda: runs(record_dir, "began")[running.id], what="the job to start")
    manager.signal(signal.SIGTERM)
    assert manager.wait() == 0, manager.output()
    assert runs(record_dir) == {running.id: 1}
    assert places(pg_url, job_ids) == {running.id: "finished", waiting.id: "queued"}
    with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker:
        assert broker.managers() == []
        assert broker.queued_job_ids() == [waiting.id]


def test_a_second_sigint_stops_cold_and_puts_the_job_back(
    pg_url: str, record_dir: Path, run_qw: list[ManagerProcess]
) -> None:
    [job_id] = queue(pg_url, [Job.new({"sleep": 60})])
    manager = ManagerProcess(pg_url, "sd", "--backend", "postgres", record_dir=record_dir, workers=1)
    run_qw.append(manager)
    wait_for(lambda: runs(record_dir, "began")[job_id], what="the job to start")
    manager.signal_group(signal.SIGINT)
    wait_for(lambda: "stopping after running jobs" in manager.output(), what="the warm stop to begin")
    manager.signal_group(signal.SIGINT)
    assert manager.wait(timeout=10) == 0, manager.output()
    assert runs(record_dir) == {}
    assert places(pg_url, [job_id]) == {job_id: "queued"}
    with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker:
        assert broker.failed_jobs() == []


def test_a_postgres_restart_mid_drain_pauses_the_workers_and_loses_nothing(record_dir: Path) -> None:
    server = PrivatePostgres()
    try:
        server.start()
        with fresh_schema(server.url) as schema:
            url = schema_url(schema, server.url)
            job_ids = queue(url, [Job.new({"sleep": 0.01, "n": n}) for n in range(400)])
            manager = start_manager(url, "rs")
            try:
                wait_for(lambda: len(runs(record_dir)) >= 50, what="the drain to begin")
                server.stop("fast")  # every connection is cut; the workers' calls fail
                ran_while_down = len(runs(record_dir))
                server.start()
                wait_for(lambda: set(runs(record_dir)) == set(job_ids), what="every job to run", timeout=90)
                wait_for(
                    lambda: set(places(url, job_ids).values()) == {"finished"},
                    what="every job to finish",
                    timeout=30,
                )
                # Every lock went with the restart: each session took its own again.
                with contextlib.closing(PostgresBroker.from_url(url)) as broker:
                    workers = broker.workers("rs")
                assert len(workers) == 2
                for worker in workers:
                    assert holders(schema, sessions.WORKER_LOCK, worker, server.url), worker
                assert holders(schema, sessions.MANAGER_LOCK, "rs", server.url)
            finally:
                stop_manager(manager, timeout=60)
            assert ran_while_down < len(job_ids), "the restart came mid-drain"
            ran = runs(record_dir)
            assert all(count <= 2 for count in ran.values()), "a job ran at most twice (cut off mid-run)"
            assert sum(count - 1 for count in ran.values()) <= 2 * 100, "only jobs in hand ran again"
            with contextlib.closing(PostgresBroker.from_url(url)) as broker:
                assert broker.failed_jobs() == []
    finally:
        server.close()


def test_a_worker_whose_first_heartbeat_failed_takes_no_job_until_it_has_one(
    pg_url: str, record_dir: Path
) -> None:
    # A restarted worker's first heartbeat is written by its manager's main broker, idle
    # since the last settle: a connection cut meanwhile (an idle timeout, a proxy) fails
    # that one call. The worker must wait for the heartbeat thread's next beat; taking
    # jobs with no heartbeat, another manager's reaper would reap it while it lives.
    manager = start_manager(pg_url, "sp", heartbeat=3.0, heartbeat_ttl=120.0, num_workers=1)
    real_beat = manager._broker.beat
    failed: list[str] = []

    def beat(**kwargs: Any) -> Any:
        if kwargs["workers"] and not failed:  # the restarted worker's first heartbeat
            failed.append(next(iter(kwargs["workers"])))
            raise BrokerUnavailable("the connection was cut")
        return real_beat(**kwargs)

    manager._broker.beat = beat  # type: ignore[method-assign]
    crash, slow = Job.new({"crash": 1}), Job.new({"sleep": 1.0})
    queue(pg_url, [crash, slow])
    reaper = PostgresBroker.from_url(pg_url)
    reaped: list[Reaped] = []
    try:
        deadline = time.monotonic() + 60
        while places(pg_url, [slow.id])[slow.id] != "finished":
            assert time.monotonic() < deadline, "the job did not run"
            reaped += reaper.reap(owner="test", lease=0, ttl=0.5) or []
    finally:
        stop_manager(manager)
        reaper.close()
    assert len(failed) == 1, "the restarted worker's first heartbeat failed"
    assert reaped == [], "a live worker was reaped"
    assert records(record_dir, "reaped") == []
    assert runs(record_dir)[slow.id] == 1


def test_no_worker_is_reaped_right_after_the_server_reinitialised_from_a_crash() -> None:
    # A server process killed (by the out-of-memory killer, say) makes PostgreSQL end every
    # connection and start afresh without the postmaster restarting: every session lock is
    # gone, and pg_postmaster_start_time() is unchanged. A reaper back before the sessions
    # are must not take their live worker for dead.
    reap_ttl = 1.0
    server = PrivatePostgres()
    opened: list[PostgresBroker] = []
    try:
        server.start()
        with fresh_schema(server.url) as schema:
            url = schema_url(schema, server.url)
            opened += [PostgresBroker.from_url(url) for _ in range(3)]
            manager, worker, reaper = opened
            manager.beat(manager="m1", token="t", workers={"m1.1": "t"}, ttl=120.0)
            worker.register_worker(manager="m1", worker="m1.1")
            [job_id] = queue(url, [Job.new({"n": 1})])
            assert [job.id for job in worker.take(manager="m1", worker="m1.1")] == [job_id]
            wait_for(lambda: reaper.reap(owner="t", lease=0, ttl=reap_ttl) == [], what="a reap past the TTL")
            assert reaper._conn is not None
            os.kill(reaper._conn.info.backend_pid, signal.SIGKILL)  # the server reinitialises
            deadline = time.monotonic() + 30
            while True:
                try:
                    first = reaper.reap(owner="t", lease=0, ttl=reap_ttl)
                    break
                except BrokerUnavailable:
                    assert time.monotonic() < deadline, "the server did not come back"
            assert holders(schema, sessions.WORKER_LOCK, "m1.1", server.url) == [], (
                "the sessions are not back"
            )
            assert first is None, "the reaper skipped the round"
            assert reaper.held_job_ids("m1.1") == [job_id]
    finally:
        for broker in opened:
            broker.close()
        server.close()
