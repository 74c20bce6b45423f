"""Failures written in batches (``Worker._failed``): a job that failed for good is written
to the failed registry with the others of its batch, and until then its worker's status
record reports it in hand. So a worker that dies first, or cannot write it, never has the
job put back as if it had not run: its manager blames it like a job it died running.

Real redis-server (a private one per module), a real manager and worker processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from reliability_support import (
    assert_each_job_in_one_place,
    queue,
    runs,
    start_manager,
    stop_manager,
    wait_for,
)

from qw_core.models import Job
from qw_redis import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def failed_kinds(url: str) -> dict[str, str]:
    broker = RedisBroker.from_url(url)
    try:
        return {entry.job.id: entry.failure.kind for entry in broker.failed_jobs(limit=1000)}
    finally:
        broker.close()


def test_a_flood_of_failing_jobs_ends_in_the_registry_each_once(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    failing = [Job.new({"raise_text": f"no {n}"}) for n in range(150)]
    fine = [Job.new({"n": n}) for n in range(150)]
    job_ids = queue(url, [job for pair in zip(failing, fine, strict=True) for job in pair])
    manager = start_manager(url, "flood")
    try:
        wait_for(lambda: len(failed_kinds(url)) == len(failing), timeout=60, what="every failure written")
        wait_for(lambda: not client.llen("all:jobs"), timeout=60, what="the queue to drain")
    finally:
        stop_manager(manager)
    assert failed_kinds(url) == {job.id: "error" for job in failing}
    assert all(count == 1 for count in runs(record_dir, "began").values()), "no job ran twice"
    where = assert_each_job_in_one_place(client, job_ids)
    assert {where[job.id] for job in failing} == {"failed"}
    assert {where[job.id] for job in fine} == {"finished"}


def test_a_failure_that_cannot_be_written_counts_its_job_as_a_crash(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    """The registry cannot be written (``qw:failed`` is another program's string): the
    worker retries, gives up and exits. Its manager finds the job in hand and counts it as
    a crash (so --max-recoveries ends the loop), instead of putting it back uncounted to
    run, fail and kill a worker for ever. Once the registry can be written, the job's next
    run fails it there (or, had its worker given up again first, the manager fails it as
    crashed)."""
    client.set("qw:failed", "another program's string")
    job = Job.new({"raise_text": "no"})
    queue(url, [job])
    manager = start_manager(url, "cw", num_workers=1, max_recoveries=1)
    try:
        wait_for(
            lambda: client.hexists("qw:recoveries", job.id), timeout=60, what="the job counted as a crash"
        )
        client.delete("qw:failed")
        wait_for(lambda: failed_kinds(url), timeout=60, what="the job in the failed registry")
    finally:
        stop_manager(manager)
    [(failed_id, kind)] = failed_kinds(url).items()
    assert failed_id == job.id
    assert kind in ("error", "crashed")
    assert runs(record_dir, "began")[job.id] == 2, "run, put back once (counted), run again"
