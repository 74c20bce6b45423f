"""A worker process stopped (SIGSTOP) past its heartbeat TTL while a slow job runs, with
quick jobs of the same batch run but not finished yet: only the job in hand runs again
(issue 10, item 8, with a real process and its manager)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis
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


def test_a_stopped_worker_keeps_its_finished_jobs_from_running_again(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    gate = record_dir / "gate"
    quick = [Job.new({"n": n}) for n in range(40)]
    slow = Job.new({"gate": str(gate)})
    job_ids = queue(url, [*quick, slow])
    manager = start_manager(url, "ps", num_workers=1)
    try:
        [pid] = worker_pids(manager)
        wait_for(lambda: runs(record_dir, "began")[slow.id], what="the slow job to start")
        held = client.lrange(f"ps.{pid}:jobs", 0, -1)
        ran_but_held = [job_id for job_id in held if job_id in runs(record_dir)]
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: records(record_dir, "reaped"), what="the stopped worker to be reaped")
        finally:
            os.kill(pid, signal.SIGCONT)
        gate.touch()
        wait_for(lambda: runs(record_dir)[slow.id] == 2, what="the slow job's two runs")
        wait_for(lambda: not client.exists("all:jobs"), what="the queue to drain")
    finally:
        stop_manager(manager)
    assert ran_but_held, (
        "quick jobs of the slow job's batch had run and were still held (else this tests nothing)"
    )
    ran = runs(record_dir)
    assert {job_id for job_id, count in ran.items() if count > 1} == {slow.id}, "only the job in hand"
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}
