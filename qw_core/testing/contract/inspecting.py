"""The broker contract, in part: the reads a dashboard makes (issue 17): a page of the
failed registry, the jobs each worker runs now, the jobs begun per minute, the schedules.

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

import itertools
import time

import pytest

from qw_core.broker import Broker
from qw_core.models import DEFAULT_QUEUE, Failure, Job, RunningJob
from qw_core.testing import MANAGER, WORKER, WORKER_2, ids
from qw_core.testing.contract.base import ContractPart


def _failed(broker: Broker, count: int) -> list[str]:
    """Fail ``count`` jobs, one after another; their ids, the oldest failure first."""
    jobs = [Job.new({"n": n}) for n in range(count)]
    broker.queue_jobs(jobs)
    failed = []
    for _ in jobs:
        [job] = broker.take(manager=MANAGER, worker=WORKER)
        assert broker.fail_job(worker=WORKER, job=job, failure=Failure(exc_type="E", message=job.id))
        failed.append(job.id)
    return failed


class InspectingContract(ContractPart):
    """The reads a dashboard makes, page by page."""

    # -- failed_jobs_page ------------------------------------------------------------

    def test_failed_pages_are_slices_of_the_newest_first_listing(self, broker: Broker) -> None:
        failed = _failed(broker, 7)
        newest_first = list(reversed(failed))
        for offset, limit in ((0, 3), (3, 3), (6, 3), (7, 2), (2, 0), (0, 100)):
            page = broker.failed_jobs_page(offset=offset, limit=limit)
            assert [entry.job.id for entry in page] == newest_first[offset : offset + limit], (offset, limit)
        [entry] = broker.failed_jobs_page(offset=6, limit=1)
        assert (entry.job.data, entry.failure.message) == ({"n": 0}, failed[0])

    def test_a_failed_page_with_a_negative_offset_or_limit_is_refused(self, broker: Broker) -> None:
        with pytest.raises(ValueError, match="offset"):
            broker.failed_jobs_page(offset=-1, limit=1)
        with pytest.raises(ValueError, match="limit"):
            broker.failed_jobs_page(offset=0, limit=-1)

    # -- running_jobs ----------------------------------------------------------------

    def test_running_jobs_are_what_the_last_heartbeat_said(self, broker: Broker) -> None:
        shared, named = Job.new({"s": 1}), Job.new({"q": 1}, queue="mail")
        mine = Job.new({"m": 1}, manager=MANAGER)
        broker.queue_jobs([shared, named, mine])
        broker.register_manager(MANAGER)
        assert broker.running_jobs(MANAGER) == []
        taken = broker.take(manager=MANAGER, worker=WORKER, limit=2, queues=("mail", DEFAULT_QUEUE))
        assert ids(taken) == [mine.id, named.id]
        [other] = broker.take(manager=MANAGER, worker=WORKER_2)
        assert other.id == shared.id
        broker.beat(
            manager=MANAGER,
            token="m",
            workers={WORKER: "w1", WORKER_2: "w2"},
            ttl=30,
            running={WORKER: {mine.id: 100.0, named.id: 200.0}, WORKER_2: {shared.id: 300.0}},
        )
        assert broker.running_jobs(MANAGER) == sorted(
            [
                RunningJob(job_id=mine.id, worker=WORKER, since=100.0, queue=f"manager:{MANAGER}"),
                RunningJob(job_id=named.id, worker=WORKER, since=200.0, queue="mail"),
                RunningJob(job_id=shared.id, worker=WORKER_2, since=300.0, queue=DEFAULT_QUEUE),
            ],
            key=lambda r: (r.worker, r.job_id),
        )
        broker.beat(
            manager=MANAGER, token="m", workers={WORKER: "w1", WORKER_2: "w2"}, ttl=30, running={WORKER: {}}
        )
        assert [(r.worker, r.job_id) for r in broker.running_jobs(MANAGER)] == [(WORKER_2, shared.id)]
        assert broker.running_jobs("another") == []

    def test_running_jobs_end_with_the_heartbeat(self, broker: Broker) -> None:
        broker.queue_jobs([Job.new({})])
        [job] = broker.take(manager=MANAGER, worker=WORKER)
        broker.beat(
            manager=MANAGER, token="m", workers={WORKER: "w"}, ttl=0.2, running={WORKER: {job.id: 1.0}}
        )
        assert [r.job_id for r in broker.running_jobs(MANAGER)] == [job.id]
        deadline = time.monotonic() + 10
        while broker.running_jobs(MANAGER) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert broker.running_jobs(MANAGER) == []

    # -- note_jobs_run / jobs_run ----------------------------------------------------

    def test_jobs_run_add_up_per_manager_and_minute(self, broker: Broker) -> None:
        broker.note_jobs_run(manager=MANAGER, count=3)
        broker.note_jobs_run(manager=MANAGER, count=4)
        broker.note_jobs_run(manager="m2", count=5)
        broker.note_jobs_run(manager="m2", count=0)
        found = broker.jobs_run(minutes=2)  # the notes fall in this minute or the one before
        if not broker.capabilities.throughput:
            assert found == []
            return
        assert len(found) == 2
        assert sum(entry.counts.get(MANAGER, 0) for entry in found) == 7
        assert sum(entry.counts.get("m2", 0) for entry in found) == 5
        assert sum(entry.total for entry in found) == 12

    def test_jobs_run_has_one_entry_per_minute_oldest_first(self, broker: Broker) -> None:
        found = broker.jobs_run(minutes=5)
        if not broker.capabilities.throughput:
            assert found == []
            return
        minutes = [entry.minute for entry in found]
        assert len(minutes) == 5
        assert all(minute % 60 == 0 for minute in minutes)
        assert [b - a for a, b in itertools.pairwise(minutes)] == [60] * 4
        assert abs(minutes[-1] + 30 - time.time()) < 3600  # the backend's clock, near this one
        assert all(entry.total == 0 for entry in found)

    def test_jobs_run_bounds_are_checked(self, broker: Broker) -> None:
        with pytest.raises(ValueError, match="negative"):
            broker.note_jobs_run(manager=MANAGER, count=-1)
        for minutes in (0, 61):
            with pytest.raises(ValueError, match="minutes"):
                broker.jobs_run(minutes=minutes)

    # -- schedules -------------------------------------------------------------------

    def test_schedules_is_a_list(self, broker: Broker) -> None:
        assert isinstance(broker.schedules(), list)
