"""The broker contract, in part: named queues: who serves them, in what order, and where
a job goes back to.

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

import pytest

from qw_core.broker import Broker
from qw_core.errors import InvalidName
from qw_core.models import DEFAULT_QUEUE, Failure, Job
from qw_core.testing import (
    MANAGER,
    OTHER_MANAGER,
    OTHER_WORKER,
    WOKEN_WITHIN,
    WORKER,
    ids,
    poll_take,
    take_while_blocked,
)
from qw_core.testing.contract.base import ContractPart


class QueuesContract(ContractPart):
    """Named queues: served only by the workers that name them, in priority order."""

    def test_a_job_on_a_named_queue_is_taken_only_by_a_worker_that_serves_it(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, queue="emails")
        broker.queue_job(job)
        assert broker.take(manager=MANAGER, worker=WORKER) == []  # the shared queue only
        assert broker.take(manager=MANAGER, worker=WORKER, queues=["reports"]) == []
        [taken] = broker.take(manager=MANAGER, worker=WORKER, queues=["emails"])
        assert (taken, taken.queue) == (job, "emails")
        assert broker.held_job_ids(WORKER) == [job.id]

    def test_queues_are_served_in_strict_priority_order_after_the_managers(self, broker: Broker) -> None:
        low = [Job.new({"n": n}, queue="low") for n in range(2)]
        shared = [Job.new({"n": n}) for n in range(2)]
        high = [Job.new({"n": n}, queue="high") for n in range(2)]
        mine = Job.new({"n": 0}, manager=MANAGER)
        broker.queue_jobs([*low, *shared, *high, mine])  # the most urgent queued last
        taken = broker.take(manager=MANAGER, worker=WORKER, queues=["high", DEFAULT_QUEUE, "low"], limit=10)
        assert ids(taken) == ids([mine, *high, *shared, *low])

    def test_a_job_on_an_earlier_queue_is_taken_first_one_take_at_a_time(self, broker: Broker) -> None:
        broker.queue_jobs([Job.new({"n": 1}, queue="low"), Job.new({"n": 2}, queue="low")])
        served = ["high", "low"]
        [first] = broker.take(manager=MANAGER, worker=WORKER, queues=served)
        urgent = Job.new({"n": 3}, queue="high")
        broker.queue_job(urgent)
        assert broker.take(manager=MANAGER, worker=WORKER, held=[first.id], queues=served) == [urgent]

    def test_default_names_the_shared_queue(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, queue=DEFAULT_QUEUE)
        assert job.queue is None
        broker.queue_job(job)
        assert broker.queued_job_ids(queue=DEFAULT_QUEUE) == [job.id]
        assert broker.take(manager=MANAGER, worker=WORKER, queues=["emails"]) == []
        assert broker.take(manager=MANAGER, worker=WORKER, queues=["emails", DEFAULT_QUEUE]) == [job]

    def test_two_applications_on_one_backend_never_take_each_others_jobs(self, broker: Broker) -> None:
        ours = [Job.new({"app": "a", "n": n}, queue="app-a") for n in range(3)]
        theirs = [Job.new({"app": "b", "n": n}, queue="app-b") for n in range(3)]
        broker.queue_jobs([*ours, *theirs])
        taken_a = broker.take(manager=MANAGER, worker=WORKER, queues=["app-a"], limit=10)
        taken_b = broker.take(manager=OTHER_MANAGER, worker=OTHER_WORKER, queues=["app-b"], limit=10)
        assert (taken_a, taken_b) == (ours, theirs)

    @pytest.mark.parametrize("served", [["emails"], ["reports", "emails"]])
    def test_a_blocked_take_wakes_for_a_job_on_any_of_its_queues(
        self, broker: Broker, served: list[str]
    ) -> None:
        job = Job.new({"n": 1}, queue="emails")
        taken, waited = take_while_blocked(
            broker,
            blocked=lambda: self.blocked_takers(broker) > 0,
            act=lambda: broker.queue_job(job),
            queues=served,
        )
        assert taken == [job]
        assert waited < WOKEN_WITHIN

    def test_a_retried_job_goes_back_to_its_queue(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, queue="emails")
        broker.queue_job(job)
        [taken] = broker.take(manager=MANAGER, worker=WORKER, queues=["emails"])
        assert broker.retry_job(worker=WORKER, job=taken)
        assert broker.queued_job_ids() == []
        assert broker.queued_job_ids(queue="emails") == [job.id]
        [again] = broker.take(manager=OTHER_MANAGER, worker=OTHER_WORKER, queues=["emails"])
        assert (again.id, again.queue, again.attempts) == (job.id, "emails", 1)

    def test_released_and_recovered_jobs_go_back_to_their_queue(self, broker: Broker) -> None:
        released, recovered = Job.new({"n": 1}, queue="emails"), Job.new({"n": 2}, queue="emails")
        broker.queue_jobs([released, recovered])
        broker.take(manager=MANAGER, worker=WORKER, queues=["emails"], limit=2)
        assert broker.release_jobs(worker=WORKER, job_ids=[released.id]) == 1
        assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 1
        assert broker.queued_job_ids(queue="emails") == [recovered.id, released.id]
        assert broker.queued_job_ids() == broker.queued_job_ids(MANAGER) == []

    def test_a_requeued_failed_job_goes_back_to_its_queue(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, queue="emails")
        broker.queue_job(job)
        [taken] = broker.take(manager=MANAGER, worker=WORKER, queues=["emails"])
        assert broker.fail_job(worker=WORKER, job=taken, failure=Failure(exc_type="E", message="boom"))
        failed = broker.get_failed(job.id)
        assert failed is not None
        assert failed.job.queue == "emails"
        assert broker.requeue_failed(job.id)
        assert broker.queued_job_ids(queue="emails") == [job.id]

    def test_a_delayed_job_goes_to_its_queue_when_due(self, broker: Broker) -> None:
        if not broker.capabilities.delayed:
            pytest.skip("this backend has no delayed jobs")
        job = Job.new({"n": 1}, queue="emails")
        broker.queue_job(job, delay=0.2)
        assert broker.delayed_job_ids(queue="emails") == [job.id]
        assert broker.delayed_count(queue="emails") == 1
        assert broker.delayed_job_ids() == []
        taken, _ = poll_take(broker, timeout=5.0, step=0.1, queues=["emails"])
        assert (taken, taken[0].queue) == ([job], "emails")

    def test_each_queue_is_listed_and_counted_alone(self, broker: Broker) -> None:
        emails = [Job.new({"n": n}, queue="emails") for n in range(3)]
        shared = Job.new({"n": 9})
        broker.queue_jobs([*emails, shared, Job.new({"n": 5}, queue="reports")])
        assert broker.queued_job_ids(queue="emails") == ids(emails)
        assert broker.queued_job_ids(queue="emails", offset=1, limit=1) == [emails[1].id]
        assert broker.queued_count(queue="emails") == 3
        assert broker.queued_count() == broker.queued_count(queue=DEFAULT_QUEUE) == 1
        assert broker.named_queues() == ["emails", "reports"]
        with pytest.raises(ValueError, match="not both"):
            broker.queued_job_ids(MANAGER, queue="emails")

    def test_a_named_queue_is_never_reported_stray(self, broker: Broker) -> None:
        broker.queue_job(Job.new({"n": 1}, queue="emails"))
        assert broker.stray_queues() == {}

    @pytest.mark.parametrize("bad", ["a:b", "", "qw", "two words"])
    def test_a_queue_name_that_cannot_be_a_name_is_refused(self, broker: Broker, bad: str) -> None:
        with pytest.raises(InvalidName):
            broker.queue_job(Job(data={"n": 1}, queue=bad))
        assert broker.queued_job_ids() == []
        with pytest.raises(InvalidName):
            broker.take(manager=MANAGER, worker=WORKER, queues=[bad])
