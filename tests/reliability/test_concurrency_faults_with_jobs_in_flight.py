"""Faults while a worker has several jobs in flight, which the single-job reliability
tests (test_redis_faults, test_paused_worker) do not cover: a Redis restart, and a worker
paused (SIGSTOP) past its heartbeat TTL and resumed. These held up; they are kept as
regression tests for the concurrent paths (every job ends in exactly one place; a job
runs twice only if it was in hand at the pause).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis
from qwtest_redis import PrivateRedis
from reliability_support import (
    assert_each_job_in_one_place,
    queue,
    records,
    runs,
    start_manager,
    stop_manager,
    wait_for,
    worker_pids,
)

from qw_core.models import Job

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TARGETS = {"threads": "qwtest_targets.faults:work", "async": "qwtest_targets.faults:awork"}


@pytest.mark.parametrize("how", sorted(TARGETS))
def test_redis_killed_and_restarted_with_jobs_in_flight_loses_and_repeats_nothing(
    server: PrivateRedis, url: str, client: redis.Redis, record_dir: Path, how: str
) -> None:
    job_ids = queue(url, [Job.new({"sleep": 0.2, "n": n}) for n in range(60)])
    manager = start_manager(url, f"rf{how[0]}", target=TARGETS[how], concurrency=4)
    try:
        workers = worker_pids(manager)
        wait_for(lambda: len(runs(record_dir)) >= 8, what="some jobs to run")
        server.kill()
        down_at = time.monotonic()
        while time.monotonic() - down_at < 3.0:  # the outage: longer than the 1 s TTL
            time.sleep(0.1)
        server.start()
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), timeout=60, what="every job to run")
        assert worker_pids(manager) == workers, "no worker process died"
    finally:
        stop_manager(manager)
    assert all(count == 1 for count in runs(record_dir).values()), runs(record_dir)
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}
    assert records(record_dir, "died") == []
    assert records(record_dir, "reaped") == []


@pytest.mark.parametrize("how", sorted(TARGETS))
def test_a_worker_paused_past_its_ttl_with_jobs_in_flight_repeats_only_those(
    url: str, client: redis.Redis, record_dir: Path, how: str
) -> None:
    job_ids = queue(url, [Job.new({"sleep": 0.5, "n": n}) for n in range(24)])
    manager = start_manager(url, f"ps{how[0]}", target=TARGETS[how], concurrency=4, num_workers=2)
    try:
        victim = worker_pids(manager)[0]
        wait_for(
            lambda: sum(1 for row in records(record_dir, "began") if row["pid"] == victim) >= 4,
            what="the victim to have jobs in flight",
        )
        os.kill(victim, signal.SIGSTOP)
        paused_with = {row["job_id"] for row in records(record_dir, "began") if row["pid"] == victim}
        paused_with -= {row["job_id"] for row in records(record_dir, "ran") if row["pid"] == victim}
        wait_for(lambda: records(record_dir, "reaped"), timeout=20, what="the reaper to hand its jobs on")
        os.kill(victim, signal.SIGCONT)
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), timeout=60, what="every job to run")
    finally:
        os.kill(victim, signal.SIGCONT)
        stop_manager(manager)
    twice = {job_id for job_id, count in runs(record_dir, "began").items() if count > 1}
    assert twice <= paused_with, "only jobs in flight at the pause began again"
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}
