"""A unique job whose worker is killed (SIGKILL) while it runs, with a real manager on a
real Redis: its key is held throughout the crash and the recovery (no producer gets a
second copy in), the job runs again, and the key is free once that run ends."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis
from reliability_support import ManagerProcess, pid_of_began, records, runs, wait_for

from qw_core.models import Job
from qw_core.unique import Queued
from qw_redis import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.serial]

KEY = "nightly-report"


def test_a_crash_while_holding_the_key_lets_no_second_copy_in_and_frees_it_after_the_rerun(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    gate = record_dir / "gate"
    broker = RedisBroker.from_url(url)
    manager = ManagerProcess(url, "um", record_dir=record_dir, workers=1)
    try:
        job = Job.new({"gate": str(gate)})
        assert broker.queue_job_unique(job, KEY) == Queued(job.id, True)
        wait_for(lambda: pid_of_began(record_dir, job.id) is not None, timeout=30, what="the job to begin")
        first_pid = pid_of_began(record_dir, job.id)
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        answers: list[Queued] = []

        def rerun_began() -> bool:
            # Producers keep trying while the job is recovered and taken again.
            answers.append(broker.queue_job_unique(Job.new({"n": len(answers)}), KEY))
            return pid_of_began(record_dir, job.id, other_than=first_pid) is not None

        wait_for(rerun_began, timeout=30, what="the job to run again after the crash")
        assert answers, "producers tried during the recovery"
        assert set(answers) == {Queued(job.id, False)}, "no second copy got in"
        assert broker.queue_job(Job.new({}), unique=KEY) == job.id, "held while it runs again"
        gate.touch()
        wait_for(lambda: runs(record_dir)[job.id] == 1, timeout=30, what="the re-run to end")
        wait_for(lambda: broker.get_job(job.id) is None, timeout=30, what="the job to be finished")
        after = broker.queue_job_unique(Job.new({"after": True}), KEY)
        assert after.created, "the key is free once the re-run ended"
        assert [row["worker"] for row in records(record_dir, "died")] == [f"um.{first_pid}"]
        # One read: the manager runs on, so the new holder may finish (freeing the key) between two.
        assert client.get(f"qw:unique:{KEY}") in (None, f"e:{after.id}")
    finally:
        manager.close()
        broker.close()
