"""Crashes, stops and time limits of workers that run several jobs at once (threads, or
an event loop), against a real redis-server with real worker processes.

What must hold with N jobs in hand as with one: every job ends in exactly one place; a
job runs again only if it was in hand when its worker died; a job that kills its
process is failed as ``crashed`` and no job beside it is blamed (they become suspects
and run alone); a stop on purpose counts no crash.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis
from reliability_support import (
    ManagerProcess,
    assert_each_job_in_one_place,
    pid_of_began,
    queue,
    records,
    runs,
    start_manager,
    stop_manager,
    wait_for,
    worker_pids,
)

from qw_core import execution
from qw_core.models import Job
from qw_redis import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: The same jobs, run on threads (a plain function) and on an event loop (async def).
TARGETS = {"threads": "qwtest_targets.faults:work", "async": "qwtest_targets.faults:awork"}


@pytest.mark.parametrize("how", sorted(TARGETS))
def test_one_job_that_kills_its_process_among_300_at_concurrency_10_is_alone_blamed(
    url: str, client: redis.Redis, record_dir: Path, how: str
) -> None:
    poison = Job.new({"crash": True})
    others = [Job.new({"sleep": 0.02, "n": n}) for n in range(300)]
    job_ids = queue(url, [*others[:150], poison, *others[150:]])
    manager = start_manager(url, "cb", target=TARGETS[how], concurrency=10, max_recoveries=2)
    broker = RedisBroker.from_url(url)
    try:
        [failed] = wait_for(broker.failed_jobs, timeout=60, what="the poison job to fail")
        wait_for(lambda: len(runs(record_dir)) == len(others), timeout=60, what="every other job to run")
    finally:  # a warm stop: what ran is finished; the invariant is checked at rest
        stop_manager(manager)
        broker.close()
    assert failed.job.id == poison.id
    assert failed.failure.kind == "crashed"
    where = assert_each_job_in_one_place(client, job_ids)
    assert {where[job.id] for job in others} == {"finished"}, "no innocent job was failed"
    assert all(runs(record_dir)[job.id] >= 1 for job in others)
    crashes = len(records(record_dir, "died"))
    assert crashes >= 3, "it crashed once beside others (suspects), then alone, counted, twice more"
    assert not client.exists("qw:suspects"), "every suspect ran again"
    assert not client.exists("qw:recoveries")


@pytest.mark.parametrize("how", sorted(TARGETS))
def test_a_worker_killed_with_jobs_in_hand_gives_them_all_back_and_each_ends_once(
    url: str, client: redis.Redis, record_dir: Path, how: str
) -> None:
    gate = record_dir / "gate"
    held = [Job.new({"gate": str(gate), "n": n}) for n in range(5)]
    later = [Job.new({"sleep": 0.01, "n": n}) for n in range(5, 30)]
    job_ids = queue(url, [*held, *later])
    manager = start_manager(url, "kw", target=TARGETS[how], concurrency=5, num_workers=1)
    try:
        wait_for(lambda: len(runs(record_dir, "began")) == 5, what="five jobs in hand")
        [victim] = worker_pids(manager)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: pid_of_began(record_dir, held[0].id, other_than=victim), what="a new worker")
        gate.touch()
        wait_for(lambda: len(runs(record_dir)) == 30, timeout=30, what="every job to run")
    finally:
        stop_manager(manager)
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}
    began = runs(record_dir, "began")
    assert {job.id for job in held} == {job_id for job_id, count in began.items() if count == 2}
    assert all(count == 1 for count in runs(record_dir).values()), "each completed once"
    assert not client.exists("qw:recoveries"), "suspects are not counted"
    assert [row["worker"] for row in records(record_dir, "died")] == [f"kw.{victim}"]


def test_a_killed_manager_group_with_jobs_in_hand_is_reaped_and_each_job_ends_once(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    job_ids = queue(url, [Job.new({"sleep": 0.3, "n": n}) for n in range(30)])
    old = ManagerProcess(url, "oldc", "--concurrency", "5", record_dir=record_dir, workers=1)
    try:
        wait_for(lambda: len(runs(record_dir, "began")) >= 5, what="jobs in hand")
        old.signal_group(signal.SIGKILL)
        old.wait()
    finally:
        old.close()
    in_hand = {job_id for key in client.keys("oldc.*:jobs") for job_id in client.lrange(key, 0, -1)}
    assert len(in_hand) >= 5
    new = start_manager(url, "newc", concurrency=5)
    try:
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), timeout=60, what="every job to run")
    finally:
        stop_manager(new)
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}
    twice = {job_id for job_id, count in runs(record_dir).items() if count > 1}
    assert twice <= in_hand, "only jobs held at the kill ran again"
    assert set(runs(record_dir)) == set(job_ids)


def test_sigterm_lets_every_job_in_flight_finish(url: str, client: redis.Redis, record_dir: Path) -> None:
    job_ids = queue(url, [Job.new({"sleep": 0.5, "n": n}) for n in range(20)])
    manager = ManagerProcess(url, "wc", "--concurrency", "4", record_dir=record_dir, workers=1)
    try:
        wait_for(lambda: len(runs(record_dir, "began")) == 4, what="four jobs in flight")
        manager.signal(signal.SIGTERM)
        assert manager.wait() == 0, manager.output()
    finally:
        manager.close()
    began = set(runs(record_dir, "began"))
    assert set(runs(record_dir)) == began, "every job that began finished"
    where = assert_each_job_in_one_place(client, job_ids)
    assert {job_id for job_id, place in where.items() if place == "finished"} == began
    assert {place for job_id, place in where.items() if job_id not in began} == {"all:jobs"}


def test_a_cold_stop_puts_every_job_in_hand_back_uncounted(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    gate = record_dir / "never"
    job_ids = queue(url, [Job.new({"gate": str(gate), "n": n}) for n in range(6)])
    manager = ManagerProcess(url, "cc", "--concurrency", "3", record_dir=record_dir, workers=1)
    try:
        wait_for(lambda: len(runs(record_dir, "began")) == 3, what="three jobs in hand")
        manager.signal(signal.SIGQUIT)
        assert manager.wait() == 0, manager.output()
    finally:
        manager.close()
    assert runs(record_dir) == {}
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"all:jobs"}
    assert not client.exists("qw:recoveries")
    assert not client.exists("qw:suspects"), "a stop on purpose makes no suspects"


def test_a_thread_that_never_comes_back_is_settled_at_its_deadline_and_killed_as_a_last_resort(
    url: str, client: redis.Redis, record_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execution, "LAST_RESORT", 1.0)  # the forked workers inherit it
    gate = record_dir / "gate"
    stuck = Job.new({"sleep": 60}, meta={"timeout": 0.3})
    sibling = Job.new({"gate": str(gate)})
    job_ids = queue(url, [stuck, sibling])
    manager = start_manager(url, "lr", concurrency=2, num_workers=1)
    broker = RedisBroker.from_url(url)
    try:
        [failed] = wait_for(broker.failed_jobs, what="the stuck job to be settled")
        assert failed.failure.kind == "timeout"
        [died] = wait_for(lambda: records(record_dir, "died"), what="the last resort")
        assert died["exitcode"] == -9
        gate.touch()
        wait_for(lambda: runs(record_dir).get(sibling.id), what="the sibling to run again and finish")
    finally:
        stop_manager(manager)
        broker.close()
    assert broker_failed_once(url, stuck.id)
    finished = [row for row in records(record_dir, "finished") if row["job_id"] == stuck.id]
    assert [row["outcome"] for row in finished] == ["failed"], "settled once, by the worker"
    assert runs(record_dir, "began")[sibling.id] == 2, "put back after the kill, run again"
    assert not client.exists("qw:recoveries"), "the kill blamed nobody"
    assert assert_each_job_in_one_place(client, job_ids) == {stuck.id: "failed", sibling.id: "finished"}


def broker_failed_once(url: str, job_id: str) -> bool:
    broker = RedisBroker.from_url(url)
    try:
        return [entry.job.id for entry in broker.failed_jobs()] == [job_id]
    finally:
        broker.close()
