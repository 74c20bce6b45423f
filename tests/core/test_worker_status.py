"""What a worker tells its manager through the shared record (qw_core.status): the job in
hand while it runs, nothing between jobs, and the jobs that succeeded and are not finished
in the broker yet. The manager blames a dead worker's job, and finishes its successes,
from exactly this."""

from __future__ import annotations

import multiprocessing
from typing import Any

from qw_core import Job, PluginConfig, make_plugin_manager
from qw_core.memory import MemoryBroker
from qw_core.status import JobStatus
from qw_core.worker import Worker


def test_the_job_in_hand_is_reported_while_it_runs_and_nothing_between_jobs() -> None:
    broker = MemoryBroker()
    jobs = [Job.new({"n": n}) for n in range(3)]
    broker.queue_jobs(jobs)
    status = JobStatus(multiprocessing.get_context("spawn"))
    seen: list[tuple[str, Any]] = []

    def target(job_id: str, job_data: Any) -> None:
        seen.append((job_id, [busy.job_id for busy in status.in_hand()]))

    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    Worker(broker, target, manager="m", name="m.1", hook=hook, status=status, burst=True).run()
    assert seen == [(job.id, [job.id]) for job in jobs], "each job is in hand while it runs"
    assert status.in_hand() == [], "a worker between jobs has nothing in hand: none is blamed if it dies"
    assert status.successes() == [], "everything that succeeded was finished in the broker"
    assert broker.queued_job_ids() == []


def test_a_failed_job_is_not_in_hand_once_settled() -> None:
    broker = MemoryBroker()
    broker.queue_job(Job.new({"n": 1}))
    status = JobStatus(multiprocessing.get_context("spawn"))

    def target(job_id: str, job_data: Any) -> None:
        raise ValueError("no")

    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    Worker(broker, target, manager="m", name="m.1", hook=hook, status=status, burst=True).run()
    assert status.in_hand() == []
    assert broker.failed_count() == 1
