"""Worker recycling in the worker loop (``Worker(recycling=...)``), on the memory broker.

A worker with a budget of N jobs never takes more than it has left, runs exactly N, says
why it stopped, and leaves the rest on the queue; one over a memory bound stops after the
job that took it there. The real manager replacing recycled workers is in
``tests/reliability/test_recycled_workers.py``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from qw_core import Job
from qw_core.errors import ConfigurationError
from qw_core.memory import MemoryBroker
from qw_core.recycling import MB, Recycling, current_rss
from qw_core.worker import Worker

M, W = "m1", "m1.101"


def test_a_worker_runs_its_budget_of_jobs_takes_no_more_and_says_why() -> None:
    broker = MemoryBroker()
    jobs = [Job.new({"n": n}) for n in range(10)]
    broker.queue_jobs(jobs)
    ran: list[str] = []
    takes: list[int] = []
    take = broker.take

    def counting_take(**kwargs: Any) -> list[Job]:
        taken = take(**kwargs)
        takes.append(len(taken))
        return taken

    broker.take = counting_take  # type: ignore[method-assign]
    worker = Worker(
        broker,
        lambda job_id, data: ran.append(job_id),
        manager=M,
        name=W,
        recycling=Recycling(max_jobs=3),
        block_timeout=0.05,
    )
    worker.run()
    assert ran == [job.id for job in jobs[:3]]
    assert worker.recycled == "ran 3 jobs (the most per worker: 3)"
    assert sum(takes) == 3, "it took only what it had left to run"
    assert broker.queued_job_ids() == [job.id for job in jobs[3:]]
    assert broker.held_job_ids(W) == []


def test_a_worker_with_jobs_in_flight_lets_them_end() -> None:
    broker = MemoryBroker()
    jobs = [Job.new({"n": n}) for n in range(9)]
    broker.queue_jobs(jobs)
    ran: list[str] = []
    lock = threading.Lock()

    def target(job_id: str, data: Any) -> None:
        with lock:
            ran.append(job_id)

    worker = Worker(
        broker, target, manager=M, name=W, concurrency=3, recycling=Recycling(max_jobs=4), block_timeout=0.05
    )
    worker.run()
    assert len(ran) == 4
    assert len(set(ran)) == 4
    assert worker.recycled is not None
    assert sorted(broker.queued_job_ids()) == sorted(j.id for j in jobs if j.id not in ran)
    assert broker.held_job_ids(W) == []


def test_a_worker_over_its_memory_bound_stops_after_the_job_that_took_it_there() -> None:
    rss = current_rss()
    assert rss is not None
    broker = MemoryBroker()
    jobs = [Job.new({"n": n}) for n in range(3)]
    broker.queue_jobs(jobs)
    kept: list[bytes] = []

    def target(job_id: str, data: Any) -> None:
        if data == {"n": 1}:
            kept.append(b"\x01" * (64 * MB))

    bound = (rss + 32 * MB) // MB
    worker = Worker(
        broker, target, manager=M, name=W, recycling=Recycling(max_memory=bound), block_timeout=0.05
    )
    worker.run()
    assert worker.recycled is not None
    assert "MB of memory" in worker.recycled
    assert broker.queued_job_ids() == [jobs[2].id]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_a_bound_must_be_a_positive_whole_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError):
        Recycling(max_jobs=bad)
    with pytest.raises(ConfigurationError):
        Recycling(max_memory=bad)
