"""The memory backend with worker processes (the RPC of ``qw_core.memory_rpc``) and named
queues: jobs queued to every kind of queue, some delayed, while workers are killed. Every
job on a queue the manager serves runs and ends finished; the shared queue, not served,
keeps its jobs. (A guard: this held when written.)"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from pathlib import Path

import pytest
from reliability_support import FAST, RECORDING, TARGET, runs, wait_for, worker_pids

from qw_core.manager import Manager
from qw_core.memory import MemoryBroker
from qw_core.models import Job

pytestmark = [pytest.mark.slow]


def test_named_queues_on_the_memory_backend_with_worker_processes(record_dir: Path) -> None:
    chooser = random.Random(3)
    broker = MemoryBroker()
    manager = Manager(
        TARGET, broker, name="mq", num_workers=2, plugins=RECORDING, queues=["high", "low"], **FAST
    )
    manager.start()
    served: list[str] = []
    shared: list[str] = []
    kills = 0
    try:
        wait_for(lambda: len(worker_pids(manager)) == 2, what="the workers")
        for n in range(120):
            place = chooser.choice(["high", "low", "shared", "manager"])
            data = {"n": n, "sleep": 0.002}
            if place in ("high", "low"):
                job = Job.new(data, queue=place)
            elif place == "manager":
                job = Job.new(data, manager="mq")
            else:
                job = Job.new(data)
            broker.queue_jobs([job], delay=chooser.choice([0, 0, 0, 0.05]))
            (shared if place == "shared" else served).append(job.id)
            if chooser.random() < 0.05:
                with contextlib.suppress(ProcessLookupError, IndexError):
                    os.kill(chooser.choice(worker_pids(manager)), signal.SIGKILL)
                    kills += 1
        wait_for(
            lambda: all(runs(record_dir)[job_id] for job_id in served), timeout=30, what="every job to run"
        )
        wait_for(lambda: broker.queued_count() == len(shared), what="the shared jobs, delayed ones included")
    finally:
        manager.stop()
        assert manager.join(20)
    ran = runs(record_dir)
    assert not any(ran[job_id] for job_id in shared), "the shared queue is not served"
    assert sum(1 for job_id in served if ran[job_id] > 1) <= kills
    assert broker.held_job_ids("mq") == []
    assert broker.failed_count() == 0
    assert broker.queued_count(manager="mq") == 0
    assert broker.queued_count(queue="high") == broker.queued_count(queue="low") == 0
    assert broker.delayed_count(queue="high") == broker.delayed_count(queue="low") == 0
