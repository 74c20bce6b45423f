"""Jobs handed to workers that were waiting when their whole process group was killed
(kill -9 of the manager and its workers, as a host crash): their registrations outlive
them for a few seconds, so jobs queued then are handed to the dead. They must run once
each, put back by another manager's reaper. (A guard: this held when written.)"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis
from reliability_support import (
    ManagerProcess,
    assert_each_job_in_one_place,
    records,
    runs,
    start_manager,
    stop_manager,
    wait_for,
)

from qw_core.models import Job
from qw_redis import RedisBroker, keys

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_jobs_handed_to_workers_killed_with_their_manager_run_once(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    old = ManagerProcess(url, "hk", record_dir=record_dir)
    try:
        wait_for(
            lambda: (
                len(client.smembers("hk:workers")) == 2
                and all(client.exists(keys.idling(w)) for w in client.smembers("hk:workers"))
            ),
            what="both workers to wait for jobs",
        )
        workers = sorted(client.smembers("hk:workers"))
        old.signal_group(signal.SIGKILL)
        old.wait()
    finally:
        old.close()
    producer = RedisBroker.from_url(url)
    jobs = [Job.new({"n": n}) for n in range(6)]
    try:
        for job in jobs:  # one call each: each may be handed to a dead worker still listed
            producer.queue_jobs([job])
    finally:
        producer.close()
    handed = [job_id for w in workers for job_id in client.lrange(f"{w}:jobs", 0, -1)]
    assert handed, "no job was handed to a dead worker (their registrations had expired): this tests nothing"
    assert client.llen("all:jobs") == len(jobs) - len(handed)
    new = start_manager(url, "hk2")
    try:
        wait_for(lambda: all(runs(record_dir)[job.id] for job in jobs), timeout=30, what="every job to run")
        wait_for(lambda: len(records(record_dir, "reaped")) == 2, what="both dead workers to be reaped")
    finally:
        stop_manager(new)
    assert all(runs(record_dir)[job.id] == 1 for job in jobs)
    assert set(assert_each_job_in_one_place(client, [job.id for job in jobs]).values()) == {"finished"}
