"""Stopping ``qw run``: warm, past the grace period, and cold (issue 5, test 5).

Real redis-server; ``qw run`` runs in a process group of its own, so a Ctrl-C to the
whole group can be simulated. Every test ends with the "exactly one place" invariant.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from reliability_support import (
    ManagerProcess,
    assert_each_job_in_one_place,
    pid_of_began,
    records,
    runs,
    wait_for,
)

from qw_core.models import Job
from qw_core.testing import wait_reaped
from qw_redis import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def start(url: str, record_dir: Path) -> Iterator[Callable[..., ManagerProcess]]:
    started: list[ManagerProcess] = []

    def start(*flags: str) -> ManagerProcess:
        process = ManagerProcess(url, "sd", *flags, record_dir=record_dir, workers=1)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def queue(url: str, *jobs: Job) -> list[str]:
    broker = RedisBroker.from_url(url)
    try:
        broker.queue_jobs(list(jobs))
    finally:
        broker.close()
    return [job.id for job in jobs]


def assert_deregistered(client: redis.Redis) -> None:
    assert client.smembers("all:managers") == set()
    assert not client.exists("sd:workers", "qw:managers")
    assert client.keys("qw:hb:*") == []


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c to the group"])
def test_5_warm_stop_lets_the_running_job_finish_and_takes_nothing_new(
    how: str, url: str, client: redis.Redis, record_dir: Path, start: Callable[..., ManagerProcess]
) -> None:
    running, waiting = Job.new({"sleep": 1.0}), Job.new({"n": 1})
    job_ids = queue(url, running, waiting)
    manager = start()
    wait_for(lambda: runs(record_dir, "began")[running.id], what="the job to start")
    if how == "sigterm":
        manager.signal(signal.SIGTERM)
    else:
        manager.signal_group(signal.SIGINT)
    assert manager.wait() == 0, manager.output()
    assert runs(record_dir) == {running.id: 1}, "the running job completed; nothing new was taken"
    assert assert_each_job_in_one_place(client, job_ids) == {running.id: "finished", waiting.id: "all:jobs"}
    assert_deregistered(client)


def test_5_past_the_grace_period_the_job_is_put_back_and_the_worker_killed(
    url: str, client: redis.Redis, record_dir: Path, start: Callable[..., ManagerProcess]
) -> None:
    job_ids = queue(url, long := Job.new({"sleep": 60}), Job.new({"n": 1}))
    manager = start("--grace", "0.3")
    wait_for(lambda: runs(record_dir, "began")[long.id], what="the job to start")
    manager.signal(signal.SIGTERM)
    assert manager.wait(timeout=10) == 0, manager.output()
    assert runs(record_dir) == {}
    assert client.lrange("all:jobs", 0, -1) == job_ids[::-1], "put back at the front, in order"
    assert not client.exists("qw:recoveries"), "a stop on purpose is no crash"
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"all:jobs"}
    assert_deregistered(client)


def test_5_a_second_sigint_stops_cold_and_puts_the_job_back(
    url: str, client: redis.Redis, record_dir: Path, start: Callable[..., ManagerProcess]
) -> None:
    [job_id] = queue(url, Job.new({"sleep": 60}))
    manager = start()
    wait_for(lambda: runs(record_dir, "began")[job_id], what="the job to start")
    manager.signal_group(signal.SIGINT)
    wait_for(lambda: "stopping after running jobs" in manager.output(), what="the warm stop to begin")
    manager.signal_group(signal.SIGINT)
    assert manager.wait(timeout=10) == 0, manager.output()
    assert runs(record_dir) == {}
    assert assert_each_job_in_one_place(client, [job_id]) == {job_id: "all:jobs"}
    assert not client.exists("qw:recoveries")
    assert_deregistered(client)


def test_a_worker_done_early_is_deregistered_while_its_sibling_finishes(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    # The idle worker exits at once; the other runs a job for longer than the 1 s heartbeat
    # TTL. The first deregisters as it exits: left registered without a heartbeat, it
    # would be taken for dead by the manager's own reaper.
    gate = record_dir / "gate"
    [job_id] = queue(url, Job.new({"gate": str(gate)}))
    manager = ManagerProcess(url, "sd", record_dir=record_dir, workers=2)
    try:
        wait_for(lambda: runs(record_dir, "began")[job_id], what="the job to start")
        wait_for(lambda: client.scard("sd:workers") == 2, what="both workers to register")
        manager.signal(signal.SIGTERM)
        try:
            wait_for(lambda: client.scard("sd:workers") == 1, what="the idle worker to be deregistered")
        except pytest.fail.Exception:
            workers = sorted(client.smembers("sd:workers"))
            beating = sorted(client.scan_iter(match="qw:hb:*"))
            log = manager.output()
            pytest.fail(f"registered: {workers}, heartbeats: {beating}; the manager's log:\n{log}")
        time.sleep(2.0)  # the long job runs on past the TTL and a few reaper rounds
        assert not runs(record_dir), "the long job is still running"
        gate.touch()
        assert manager.wait() == 0, manager.output()
    finally:
        manager.close()
    assert runs(record_dir) == {job_id: 1}
    assert records(record_dir, "reaped") == [], "a worker stopped on purpose is never reaped"
    assert assert_each_job_in_one_place(client, [job_id]) == {job_id: "finished"}
    assert_deregistered(client)


def test_a_manager_that_cannot_settle_a_stopped_worker_stays_registered_for_a_reaper(
    url: str, client: redis.Redis, record_dir: Path, start: Callable[..., ManagerProcess]
) -> None:
    # Putting back what the killed worker held fails (qw:recoveries is another program's
    # string, so recover.lua refuses). Were the manager to deregister anyway, no reaper
    # would look at its worker again, and the job would stay on the worker's list for ever.
    [job_id] = queue(url, Job.new({"sleep": 60}))
    manager = start()
    wait_for(lambda: runs(record_dir, "began")[job_id], what="the job to start")
    [worker] = client.smembers("sd:workers")
    client.set("qw:recoveries", "another program's string")
    manager.signal(signal.SIGQUIT)
    assert manager.wait(timeout=20) == 1, manager.output()
    assert "could not settle its workers and deregister" in manager.output()
    assert client.smembers("all:managers") == {"sd"}
    assert client.hexists("qw:managers", "sd")
    assert client.smembers("sd:workers") == {worker}
    client.delete("qw:recoveries")  # mended
    assert assert_each_job_in_one_place(client, [job_id]) == {job_id: f"{worker}:jobs"}
    broker = RedisBroker.from_url(url)
    try:
        [reaped] = wait_reaped(broker, worker, ttl=1.0)
        assert (reaped.requeued, reaped.failed) == (1, 0)
        wait_for(
            lambda: broker.reap(owner="test", lease=0, ttl=1.0) is not None and not broker.managers(),
            what="the reaper to forget the manager",
        )
    finally:
        broker.close()
    assert assert_each_job_in_one_place(client, [job_id]) == {job_id: "all:jobs"}
    assert_deregistered(client)


@pytest.mark.parametrize("to", ["the manager", "the group"])
def test_sigquit_stops_cold_and_puts_the_job_back_uncounted(
    url: str, client: redis.Redis, record_dir: Path, start: Callable[..., ManagerProcess], to: str
) -> None:
    # Ctrl-\ in a terminal sends SIGQUIT to the whole group: the workers must leave it to
    # their manager, or the job they die with counts as a crash.
    [job_id] = queue(url, Job.new({"sleep": 60}))
    manager = start()
    wait_for(lambda: runs(record_dir, "began")[job_id], what="the job to start")
    (manager.signal if to == "the manager" else manager.signal_group)(signal.SIGQUIT)
    assert manager.wait(timeout=10) == 0, manager.output()
    assert "got SIGQUIT: stopping now" in manager.output()
    assert runs(record_dir) == {}, "cut off, not finished"
    assert assert_each_job_in_one_place(client, [job_id]) == {job_id: "all:jobs"}
    assert not client.exists("qw:recoveries"), "a stop on purpose is no crash"
    assert records(record_dir, "died") == []
    assert_deregistered(client)


def test_a_sigquit_to_a_worker_alone_is_ignored(
    url: str, client: redis.Redis, record_dir: Path, start: Callable[..., ManagerProcess]
) -> None:
    # What a group's Ctrl-\ does to a worker, without its manager's cold stop racing it:
    # the worker ignores it and its job runs on (were it to die of it, the job would be
    # counted as a crash).
    [job_id] = queue(url, Job.new({"sleep": 0.5}))
    manager = start()
    try:
        pid = wait_for(lambda: pid_of_began(record_dir, job_id), what="the job to start")
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            ignored = int(next(line for line in fh if line.startswith("SigIgn:")).split()[1], 16)
        assert ignored >> (signal.SIGQUIT - 1) & 1, "the worker ignores SIGQUIT"
        os.kill(pid, signal.SIGQUIT)
        wait_for(lambda: runs(record_dir).get(job_id), what="the job to finish")
        assert pid_of_began(record_dir, job_id, other_than=pid) is None, "it ran once, in that worker"
        manager.signal(signal.SIGTERM)
        assert manager.wait() == 0, manager.output()
    finally:
        manager.close()
    assert runs(record_dir) == {job_id: 1}
    assert records(record_dir, "died") == []
    assert not client.exists("qw:recoveries")


def test_sighup_stops_warmly(
    url: str, client: redis.Redis, record_dir: Path, start: Callable[..., ManagerProcess]
) -> None:
    running, waiting = Job.new({"sleep": 0.5}), Job.new({"n": 1})
    job_ids = queue(url, running, waiting)
    manager = start()
    wait_for(lambda: runs(record_dir, "began")[running.id], what="the job to start")
    manager.signal(signal.SIGHUP)
    assert manager.wait() == 0, manager.output()
    assert "got SIGHUP: stopping after running jobs" in manager.output()
    assert runs(record_dir) == {running.id: 1}
    assert assert_each_job_in_one_place(client, job_ids) == {running.id: "finished", waiting.id: "all:jobs"}
    assert_deregistered(client)


def test_a_stop_that_comes_while_a_worker_is_still_starting_is_not_lost(
    url: str, client: redis.Redis, record_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker forked from its manager inherits the manager's signal handlers, which would
    # swallow the manager's SIGTERM until the worker installs its own: it must not.
    monkeypatch.setenv("QWTEST_BAD_HOOK", "slow_start")
    manager = ManagerProcess(url, "ss", "-p", "qwtest_targets.bad_plugins", record_dir=record_dir, workers=2)
    try:
        wait_for(lambda: len(records(record_dir, "loading")) == 2, what="the workers to be loading")
        manager.signal(signal.SIGTERM)
        assert manager.wait(timeout=20) == 0, manager.output()
    finally:
        manager.close()
    assert_deregistered(client)
