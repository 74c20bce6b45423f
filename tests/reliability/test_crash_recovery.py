"""Crashes: a worker killed mid-job, a whole manager killed, a paused worker reaped, poison
jobs, and jobs that overrun their time limit (issue 5, tests 1 to 4, and time limits).

Real redis-server (a private one per module); test-sized timings (heartbeat 0.2 s, TTL 1 s).
Every test ends with the "exactly one place" invariant.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from pathlib import Path

import attrs
import pytest
import redis
from reliability_support import (
    RECORDING,
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

from qw_core.models import FailedJob, Failure, Job
from qw_core.policy import FailedLimits, RetryPolicy
from qw_redis import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_1_a_worker_killed_mid_job_gives_its_job_back_which_then_finishes_once(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    [job_id] = queue(url, [Job.new({"sleep": 0.5})])
    manager = start_manager(url, "t1")
    try:
        victim = wait_for(lambda: pid_of_began(record_dir, job_id), what="the job to start")
        dead = f"t1.{victim}"
        assert client.lrange(f"{dead}:jobs", 0, -1) == [job_id]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: pid_of_began(record_dir, job_id, other_than=victim), what="the job to run again")
        assert time.monotonic() - killed_at < 10.0
        wait_for(lambda: runs(record_dir)[job_id] == 1 and not client.exists(f"job:{job_id}"), what="finish")
        assert not client.exists(f"{dead}:jobs"), "the dead worker's list is gone"
        assert dead not in client.smembers("t1:workers")
        assert not client.exists(f"qw:hb:{dead}")
        assert [row["worker"] for row in records(record_dir, "died")] == [dead]
    finally:
        stop_manager(manager)
    assert runs(record_dir, "began")[job_id] == 2
    assert runs(record_dir)[job_id] == 1
    assert assert_each_job_in_one_place(client, [job_id]) == {job_id: "finished"}


def test_2_a_killed_manager_group_is_reaped_by_a_new_manager(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    job_ids = queue(url, [Job.new({"sleep": 0.2, "n": n}) for n in range(20)])
    old = ManagerProcess(url, "old", record_dir=record_dir)
    try:
        wait_for(lambda: len(runs(record_dir)) >= 3, what="some jobs to finish")
        wait_for(lambda: len(client.keys("old.*:jobs")) == 2, what="both workers to hold a job")
        old.signal_group(signal.SIGKILL)
        old.wait()
    finally:
        old.close()
    in_flight = {job_id for key in client.keys("old.*:jobs") for job_id in client.lrange(key, 0, -1)}
    dead_workers = client.smembers("old:workers")
    assert in_flight
    assert len(dead_workers) == 2
    ran_before = runs(record_dir)

    new = start_manager(url, "new")
    try:
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), what="every job to run")
        wait_for(lambda: client.smembers("all:managers") == {"new"}, what="the dead manager to go")
        # A place check reads twice, so a job moving meanwhile looks misplaced: wait for
        # every job's data to be gone, then check each place once the manager stopped.
        wait_for(lambda: not any(client.exists(f"job:{i}") for i in job_ids), what="every job to finish")
    finally:
        stop_manager(new)
    where = assert_each_job_in_one_place(client, job_ids)
    assert set(where.values()) == {"finished"}
    assert len(where) == 20
    ran = runs(record_dir)
    twice = {job_id for job_id, count in ran.items() if count > 1}
    assert twice <= in_flight, "only the jobs in flight at the kill ran twice"
    assert all(count <= 2 for count in ran.values())
    assert all(ran_before[job_id] <= 1 for job_id in job_ids)
    # The dead workers, and only they: the new manager settles its own workers as they stop.
    assert {row["worker"] for row in records(record_dir, "reaped")} == dead_workers
    assert not client.exists("old:workers")
    assert not client.hexists("qw:managers", "old")
    assert not client.keys("qw:hb:old*")


def test_3_a_paused_worker_is_reaped_and_its_late_finish_changes_nothing(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    # Each run waits for a gate of its own, so the test says when each one ends. (A timed
    # run would not do: on Python 3.10, time.sleep() is a select() that the kernel resumes
    # after SIGCONT with the time it had left when stopped, so the paused worker's run ends
    # as late as the other's, which may have finished the job by the time it is looked at.)
    gates = record_dir / "gates"
    gates.mkdir()
    [job_id] = queue(url, [Job.new({"gates": str(gates)})])
    manager = start_manager(url, "t3")
    try:
        paused = wait_for(lambda: pid_of_began(record_dir, job_id), what="the job to start")
        os.kill(paused, signal.SIGSTOP)
        try:
            other = wait_for(
                lambda: pid_of_began(record_dir, job_id, other_than=paused),
                what="the reaper to hand the job to the other worker",
            )
            assert f"t3.{paused}" not in client.smembers("t3:workers")
            assert [row["worker"] for row in records(record_dir, "reaped")] == [f"t3.{paused}"]
        finally:
            os.kill(paused, signal.SIGCONT)
        # The paused worker wakes up, completes its run, and finishes (guarded, so nothing
        # happens) with its next take, after which it blocks for new jobs: the only client
        # blocked, as the other worker is still running the job.
        (gates / str(paused)).touch()
        wait_for(lambda: any(r["pid"] == paused for r in records(record_dir, "ran")), what="the late run")
        wait_for(lambda: any(c["cmd"] == "blpop" for c in client.client_list()), what="the late finish")
        assert not any(r["pid"] == other for r in records(record_dir, "ran")), "the real run goes on"
        assert client.lrange(f"t3.{other}:jobs", 0, -1) == [job_id], "still held by the other worker"
        assert client.exists(f"job:{job_id}")
        (gates / str(other)).touch()
        wait_for(lambda: any(r["pid"] == other for r in records(record_dir, "ran")), what="the real run")
        wait_for(lambda: not client.exists(f"job:{job_id}"), what="the job to finish")
        wait_for(lambda: f"t3.{paused}" in client.smembers("t3:workers"), what="re-registration")
        assert worker_pids(manager) == sorted([paused, other]), "the paused worker lives on"
    finally:
        for pid in worker_pids(manager):
            (gates / str(pid)).touch()
        stop_manager(manager)
    assert runs(record_dir)[job_id] == 2
    assert assert_each_job_in_one_place(client, [job_id]) == {job_id: "finished"}


def run_until_the_poison_fails(
    url: str, name: str, record_dir: Path, *, others: int, max_recoveries: int
) -> list[FailedJob]:
    """Run a manager until a job is failed and ``others`` jobs ran; the failed jobs."""
    manager = start_manager(url, name, max_recoveries=max_recoveries)
    broker = RedisBroker.from_url(url)
    try:
        failed = wait_for(broker.failed_jobs, what="the poison job to fail")
        wait_for(lambda: len(runs(record_dir)) == others, what="the other jobs")
    finally:
        stop_manager(manager)
        broker.close()
    return failed


def test_4_a_job_that_kills_its_worker_is_failed_after_the_limit_while_others_finish(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    poison = Job.new({"crash": True})
    others = [Job.new({"n": n}) for n in range(100)]
    job_ids = queue(url, [poison, *others])
    [entry] = run_until_the_poison_fails(url, "t4", record_dir, others=len(others), max_recoveries=3)
    assert entry.job.id == poison.id
    assert entry.job.data == {"crash": True}
    assert entry.failure.kind == "crashed"
    assert runs(record_dir, "began")[poison.id] == 4, "run once, put back 3 times"
    assert all(count == 1 for count in runs(record_dir).values())
    where = assert_each_job_in_one_place(client, job_ids)
    assert where[poison.id] == "failed"
    assert {where[job.id] for job in others} == {"finished"}
    assert not client.exists("qw:recoveries")


def test_a_poison_job_failed_by_the_manager_keeps_its_failed_registry_bounds(
    url: str, record_dir: Path
) -> None:
    # A crash fails the poison job with the manager's own bounds, not the defaults (which
    # would keep all three entries here).
    with contextlib.closing(RedisBroker.from_url(url)) as broker:
        old = [Job.new({"old": n}) for n in range(2)]
        broker.queue_jobs(old)
        for job in broker.take(manager="setup", worker="setup.1", limit=2):
            broker.fail_job(worker="setup.1", job=job, failure=Failure(exc_type="E", message="old"))
        poison = Job.new({"crash": True})
        broker.queue_job(poison)
        manager = start_manager(url, "t4c", max_recoveries=0, failed_limits=FailedLimits(max_count=2))
        try:
            wait_for(lambda: poison.id in {f.job.id for f in broker.failed_jobs()}, what="the poison job")
        finally:
            stop_manager(manager)
        assert broker.failed_count() == 2, "the oldest entry went, as max_count=2 says"


def test_4_only_the_poison_job_is_blamed_and_its_batch_runs_once(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    # A deep queue of quick jobs: workers take them in batches, so the poison job is held
    # beside jobs it is not running, and beside jobs that succeeded and are finished only
    # with the worker's next take. The manager finishes those (they never run again), puts
    # the others back uncounted, and counts and fails the poison job alone.
    poison = Job.new({"crash": True})
    before, after = [Job.new({"n": n}) for n in range(300)], [Job.new({"n": n}) for n in range(300, 600)]
    job_ids = queue(url, [*before, poison, *after])
    failed = run_until_the_poison_fails(url, "t4b", record_dir, others=600, max_recoveries=2)
    assert [entry.job.id for entry in failed] == [poison.id]
    assert runs(record_dir, "began")[poison.id] == 3, "run once, put back twice"
    where = assert_each_job_in_one_place(client, job_ids)
    assert {where[job.id] for job in before + after} == {"finished"}
    assert all(runs(record_dir)[job.id] == 1 for job in before + after), "no job ran twice"


def test_a_job_that_ended_in_time_is_not_failed_when_the_kill_comes_late(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    # The manager reads a job as overdue, then kills its worker; meanwhile the job ended
    # (in time) and the next one began. The ended job succeeded and waits to be finished
    # with the next take: it must be finished, not failed as timed out. Played here by
    # showing the manager's time-limit check, once, a reading of the job before the one
    # now running, as if it had read the record just before that job ended.
    gate = record_dir / "gate"
    quick = [Job.new({"n": n}) for n in range(3)]  # batches of 1 and 2: the next batch is 4
    ended, running = Job.new({"n": "ended"}), Job.new({"gate": str(gate)})
    job_ids = queue(url, [*quick, ended, running, Job.new({"n": 5}), Job.new({"n": 6})])
    manager = start_manager(url, "tl", num_workers=1, job_timeout=60)
    try:
        wait_for(lambda: pid_of_began(record_dir, running.id), what="the gated job to start")
        slot = manager._slots[0]
        assert slot.status is not None
        [now_running] = slot.status.running()
        assert now_running.job_id == running.id
        stale = attrs.evolve(now_running, seq=now_running.seq - 1, job_id=ended.id, kill_at=0.0)
        real, readings = slot.status.running, [[stale]]
        slot.status.running = lambda: readings.pop() if readings else real()  # type: ignore[method-assign]
        [victim] = {row["pid"] for row in records(record_dir, "began") if row["job_id"] == running.id}
        wait_for(lambda: pid_of_began(record_dir, running.id, other_than=victim), what="a new worker")
        gate.touch()
        wait_for(lambda: len(runs(record_dir)) == len(job_ids), what="every job to run")
    finally:
        stop_manager(manager)
    where = assert_each_job_in_one_place(client, job_ids)
    assert where[ended.id] == "finished", "it succeeded in time: finished, not failed"
    assert set(where.values()) == {"finished"}


def test_a_job_past_its_time_limit_is_failed_and_its_worker_replaced(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    own_limit = Job.new({"sleep": 60}, meta={"timeout": 0.3})
    default_limit = Job.new({"sleep": 60})
    quick = [Job.new({"n": n}) for n in range(10)]
    job_ids = queue(url, [own_limit, default_limit, *quick])
    manager = start_manager(url, "tl", job_timeout=1.0)
    broker = RedisBroker.from_url(url)
    try:
        first = worker_pids(manager)
        failed = wait_for(lambda: len(broker.failed_jobs()) == 2 and broker.failed_jobs(), what="timeouts")
        wait_for(lambda: len(runs(record_dir)) == 10, what="the quick jobs")
        wait_for(lambda: len(worker_pids(manager)) == 2, what="replacements")
        assert not set(worker_pids(manager)) & set(first), "both workers were replaced"
    finally:
        stop_manager(manager)
        broker.close()
    kinds = {entry.job.id: entry.failure for entry in failed}
    assert set(kinds) == {own_limit.id, default_limit.id}
    assert {failure.kind for failure in kinds.values()} == {"timeout"}
    assert "0.3s limit" in kinds[own_limit.id].message
    assert "1s limit" in kinds[default_limit.id].message
    where = assert_each_job_in_one_place(client, job_ids)
    assert sorted(where.values()) == ["failed"] * 2 + ["finished"] * 10


def test_a_timed_out_job_is_retried_as_the_retry_policy_allows(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    # The manager asks the plugins, as a worker would for an exception: with one retry
    # allowed, the job runs twice, then goes to the failed registry after its second
    # timeout, its attempts counted; qw_job_finished fires for each run.
    job = Job.new({"sleep": 60}, meta={"timeout": 0.3})
    job_ids = queue(url, [job])
    plugins = attrs.evolve(RECORDING, retry=RetryPolicy(max_retries=1, backoff=0.0, jitter=0.0))
    manager = start_manager(url, "tr", plugins=plugins, num_workers=1)
    broker = RedisBroker.from_url(url)
    try:
        [entry] = wait_for(broker.failed_jobs, what="the job to fail after its retry")
    finally:
        stop_manager(manager)
        broker.close()
    assert runs(record_dir, "began")[job.id] == 2, "run, timed out, retried, timed out"
    assert entry.failure.kind == "timeout"
    assert entry.job.attempts == 2, "the failed registry counts both failed runs"
    outcomes = [row["outcome"] for row in records(record_dir, "finished") if row["job_id"] == job.id]
    assert outcomes == ["retried", "failed"]
    assert assert_each_job_in_one_place(client, job_ids) == {job.id: "failed"}


def test_a_worker_that_keeps_dying_is_restarted_with_a_growing_back_off(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    # Every run kills the worker; nothing fails the job (no recovery limit), so the slot
    # dies over and over: each restart waits twice as long as the one before, up to the cap.
    [job_id] = queue(url, [Job.new({"crash": True})])
    manager = start_manager(url, "bo", num_workers=1, max_recoveries=None, restart_backoff=(0.2, 0.8))
    try:
        began = wait_for(lambda: len(b := records(record_dir, "began")) >= 5 and b, what="5 runs", timeout=30)
        assert not manager.join(0)
    finally:
        manager.stop(cold=True)
        assert manager.join(20)
    starts = [row["at"] for row in began[:5]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    for gap, wait in zip(gaps, [0.2, 0.4, 0.8, 0.8], strict=True):
        assert gap >= wait, f"restarted after {gap:.2f}s, before its {wait}s back-off: {gaps}"
    assert {row["job_id"] for row in began} == {job_id}
