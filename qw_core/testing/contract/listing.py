"""The broker contract, in part: paged listings, and requeueing or purging the whole failed
registry in batches (issue 22: a queue or a registry may hold millions).

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from qw_core.broker import Broker
from qw_core.models import Failure, Job
from qw_core.testing import MANAGER, WORKER, WORKER_2, drain, ids, make_jobs
from qw_core.testing.contract.base import ContractPart

#: A listing as the tests call it: ``listing(offset=..., limit=...)``.
Listing = Callable[..., list[str]]

#: More failed jobs than one batch of the backends' requeue or purge holds (qw's hold 100
#: to 1,000), so that a job can fail again while a run goes on.
MANY = 150


def take_all(broker: Broker, worker: str) -> list[Job]:
    """Take every job queued for :data:`MANAGER` or everybody, with ``worker``."""
    taken: list[Job] = []
    limit = broker.capabilities.max_take
    while batch := broker.take(manager=MANAGER, worker=worker, held=ids(taken), limit=limit):
        taken += batch
    return taken


def fail(broker: Broker, jobs: Sequence[Job], *, worker: str = WORKER) -> None:
    """Fail ``jobs``, held by ``worker``, in order (the first is the oldest failure)."""
    for job in jobs:
        assert broker.fail_job(worker=worker, job=job, failure=Failure(exc_type="E", message="no"))


def queue_and_fail(broker: Broker, jobs: Sequence[Job]) -> None:
    """Queue ``jobs``, take them and fail each, in order."""
    broker.queue_jobs(jobs)
    taken = {job.id: job for job in take_all(broker, WORKER)}
    assert sorted(taken) == sorted(ids(jobs))
    fail(broker, [taken[job.id] for job in jobs])


class ListingContract(ContractPart):
    """Paged listings; requeueing and purging the whole failed registry."""

    # -- paging ----------------------------------------------------------------------

    def listings(self, broker: Broker) -> dict[str, tuple[Listing, list[str]]]:
        """Every kind of listing, each holding a few ids, with the ids it must list in order."""
        shared = make_jobs(7)
        mine = make_jobs(5, manager=MANAGER)
        broker.queue_jobs([*shared, *mine])
        held = broker.take(manager=MANAGER, worker=WORKER, limit=3)  # the manager's queue first
        assert ids(held) == ids(mine[:3])
        direct = make_jobs(2, worker=WORKER)
        broker.queue_jobs(direct)
        found: dict[str, tuple[Listing, list[str]]] = {
            "shared queue": (broker.queued_job_ids, ids(shared)),
            "manager's queue": (lambda **page: broker.queued_job_ids(MANAGER, **page), ids(mine[3:])),
            "held list": (lambda **page: broker.held_job_ids(WORKER, **page), broker.held_job_ids(WORKER)),
        }
        assert sorted(found["held list"][1]) == sorted(ids(held + direct))
        if broker.capabilities.delayed:
            later = [Job.new({"d": n}) for n in range(4)]
            later_mine = [Job.new({"d": n}, manager=MANAGER) for n in range(3)]
            for n, job in enumerate([*later, *later_mine]):  # due one after another
                broker.queue_jobs([job], delay=3600 + n)
            found["shared delayed"] = (broker.delayed_job_ids, ids(later))
            found["manager's delayed"] = (
                lambda **page: broker.delayed_job_ids(MANAGER, **page),
                ids(later_mine),
            )
        return found

    def test_listings_are_paged_by_offset_and_limit(self, broker: Broker) -> None:
        for name, (listing, expected) in self.listings(broker).items():
            assert listing() == expected, name
            for offset in range(len(expected) + 2):
                for limit in (None, 0, 1, 2, 3, len(expected) + 1):
                    end = None if limit is None else offset + limit
                    assert listing(offset=offset, limit=limit) == expected[offset:end], (name, offset, limit)

    def test_a_negative_offset_or_limit_is_refused(self, broker: Broker) -> None:
        for name, (listing, _) in self.listings(broker).items():
            with pytest.raises(ValueError, match="offset"):
                listing(offset=-1)
            with pytest.raises(ValueError, match="limit"):
                listing(limit=-1)
            assert listing(limit=0) == [], name

    # -- the whole failed registry ---------------------------------------------------

    def test_requeue_all_failed_requeues_every_failed_job_oldest_first(self, broker: Broker) -> None:
        shared = make_jobs(MANY)
        mine = make_jobs(3, manager=MANAGER)
        queue_and_fail(broker, [*shared[:100], *mine, *shared[100:]])
        reported: list[str] = []
        assert broker.requeue_all_failed(progress=reported.extend) == MANY + 3
        assert sorted(reported) == sorted(ids(shared + mine)), "each id reported once"
        assert broker.failed_count() == 0
        assert broker.queued_job_ids() == ids(shared), "the oldest failure first"
        assert broker.queued_job_ids(MANAGER) == ids(mine)
        again = drain(broker, worker=WORKER_2, limit=100)
        assert sorted(ids(again)) == sorted(ids(shared + mine))
        assert {job.attempts for job in again} == {0}, "attempts reset"
        assert {job.id: job.data for job in again} == {job.id: job.data for job in shared + mine}

    def test_requeue_all_failed_passes_over_a_job_whose_id_is_live(self, broker: Broker) -> None:
        blocked, free = make_jobs(2)
        queue_and_fail(broker, [blocked, free])
        live = Job(id=blocked.id, data={"live": True})
        broker.queue_jobs([live])
        reported: list[str] = []
        assert broker.requeue_all_failed(progress=reported.extend) == 1
        assert reported == [free.id]
        assert broker.get_failed(blocked.id) is not None, "kept in the registry"
        assert broker.queued_job_ids() == [blocked.id, free.id]
        assert broker.get_job(blocked.id) == live, "the live job is left as it was"

    def test_a_job_that_fails_again_meanwhile_is_not_requeued_twice(self, broker: Broker) -> None:
        jobs = make_jobs(MANY)
        queue_and_fail(broker, jobs)
        failed_again: list[str] = []

        def fail_them_again(requeued: Sequence[str]) -> None:
            if failed_again or not requeued:
                return  # once, after the first batch: later batches are still to come
            again = take_all(broker, WORKER_2)
            assert sorted(ids(again)) == sorted(requeued)
            fail(broker, again, worker=WORKER_2)
            failed_again.extend(ids(again))

        assert broker.requeue_all_failed(progress=fail_them_again) == MANY
        assert failed_again, "a batch was requeued and failed again while the run went on"
        assert sorted(entry.job.id for entry in broker.failed_jobs(limit=MANY)) == sorted(failed_again)
        assert sorted(broker.queued_job_ids()) == sorted(set(ids(jobs)) - set(failed_again))

    def test_purge_all_failed_deletes_every_failed_job(self, broker: Broker) -> None:
        queue_and_fail(broker, make_jobs(MANY))
        counts: list[int] = []
        assert broker.purge_all_failed(progress=counts.append) == MANY
        assert sum(counts) == MANY
        assert broker.failed_count() == 0
        assert broker.failed_jobs() == []
        assert broker.purge_all_failed() == 0

    def test_failed_ids_are_found_by_their_start(self, broker: Broker) -> None:
        jobs = [Job(id=job_id, data={}) for job_id in ("abc-1", "abc-2", "abd-3", "x*[y]?-4")]
        queue_and_fail(broker, jobs)
        assert sorted(broker.failed_ids_with_prefix("abc")) == ["abc-1", "abc-2"]
        assert broker.failed_ids_with_prefix("abd") == ["abd-3"]
        assert broker.failed_ids_with_prefix("x*[y]?") == ["x*[y]?-4"]  # taken literally
        assert broker.failed_ids_with_prefix("x*") == ["x*[y]?-4"]
        assert broker.failed_ids_with_prefix("*") == []
        assert len(broker.failed_ids_with_prefix("ab", limit=2)) == 2
        assert len(broker.failed_ids_with_prefix("", limit=10)) == 4

    def test_any_known_job_is_found_by_the_start_of_its_id(self, broker: Broker) -> None:
        queue_and_fail(broker, [Job(id="job-f-3", data={})])
        broker.queue_jobs([Job(id="job-r-4", data={})])
        [taken] = broker.take(manager=MANAGER, worker=WORKER_2)
        broker.finish_with_result(worker=WORKER_2, job_id=taken.id, result="1", ttl=60)
        broker.queue_jobs([Job(id="job-q-1", data={})])
        broker.queue_jobs([Job(id="job-d-2", data={})], delay=3600)
        assert sorted(broker.job_ids_with_prefix("job-")) == ["job-d-2", "job-f-3", "job-q-1", "job-r-4"]
        assert broker.job_ids_with_prefix("job-r") == ["job-r-4"]
        assert broker.job_ids_with_prefix("job-*") == []  # taken literally
        assert len(broker.job_ids_with_prefix("job-", limit=2)) == 2
