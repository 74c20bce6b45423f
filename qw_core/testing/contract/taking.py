"""The broker contract, in part: taking jobs: order, limits, blocking and finishing.

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from qw_core.broker import Broker, Capabilities
from qw_core.models import Failure, Job
from qw_core.testing import (
    MANAGER,
    OTHER_MANAGER,
    OTHER_WORKER,
    WOKEN_WITHIN,
    WORKER,
    WORKER_2,
    drain,
    ids,
    make_jobs,
    opened,
    take_while_blocked,
)
from qw_core.testing.contract.base import ContractPart


class TakingContract(ContractPart):
    """Taking jobs: order, limits, blocking and finishing."""

    # -- the basics ----------------------------------------------------------------

    def test_capabilities_are_declared(self, broker: Broker) -> None:
        assert isinstance(broker.capabilities, Capabilities)
        assert broker.capabilities.max_take >= 1
        assert isinstance(broker.describe(), str)

    def test_take_from_an_empty_broker_returns_nothing_at_once(self, broker: Broker) -> None:
        started = time.monotonic()
        assert broker.take(manager=MANAGER, worker=WORKER) == []
        assert broker.take(manager=MANAGER, worker=WORKER, timeout=0) == []
        assert time.monotonic() - started < 2.0, "no wait (the Redis tests' slices are 10 s)"
        assert broker.queued_job_ids() == []
        assert broker.held_job_ids(WORKER) == []

    def test_taken_job_is_the_queued_job(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, meta={"timeout": 30})
        broker.queue_job(job)
        assert broker.take(manager=MANAGER, worker=WORKER) == [job]
        assert broker.get_job(job.id) == job

    def test_shared_queue_is_first_in_first_out(self, broker: Broker) -> None:
        jobs = make_jobs(5)
        broker.queue_jobs(jobs)
        assert broker.queued_job_ids() == ids(jobs)
        assert drain(broker) == jobs

    def test_manager_queue_is_first_in_first_out(self, broker: Broker) -> None:
        jobs = make_jobs(5, manager=MANAGER)
        for job in jobs:
            broker.queue_job(job)
        assert broker.queued_job_ids(MANAGER) == ids(jobs)
        assert broker.queued_job_ids() == []
        assert ids(drain(broker, limit=2)) == ids(jobs)

    def test_take_order_own_list_then_manager_then_shared(self, broker: Broker) -> None:
        shared = make_jobs(2)
        mine = make_jobs(2, manager=MANAGER)
        direct = make_jobs(2, worker=WORKER)
        broker.queue_jobs(shared + mine + direct)
        taken = broker.take(manager=MANAGER, worker=WORKER, limit=10)
        assert ids(taken) == ids(direct + mine + shared)
        assert broker.held_job_ids(WORKER) == ids(taken)
        assert broker.queued_job_ids() == broker.queued_job_ids(MANAGER) == []

    def test_leftover_held_jobs_come_first_oldest_first(self, broker: Broker) -> None:
        first, second = make_jobs(2)
        broker.queue_jobs([first, second])
        assert broker.take(manager=MANAGER, worker=WORKER, limit=2) == [first, second]
        broker.queue_job(Job.new({"later": True}, manager=MANAGER))
        # A restarted worker passes no `held`: what it held comes back first, in order.
        assert ids(broker.take(manager=MANAGER, worker=WORKER, limit=2)) == ids([first, second])

    def test_held_ids_are_not_handed_out_again(self, broker: Broker) -> None:
        first, second = make_jobs(2)
        broker.queue_jobs([first, second])
        assert broker.take(manager=MANAGER, worker=WORKER) == [first]
        assert broker.take(manager=MANAGER, worker=WORKER, held=[first.id]) == [second]
        assert broker.take(manager=MANAGER, worker=WORKER, held=[first.id, second.id]) == []
        assert broker.held_job_ids(WORKER) == ids([first, second])

    def test_manager_queue_is_private_to_its_workers(self, broker: Broker) -> None:
        job = Job.new({"for": MANAGER}, manager=MANAGER)
        broker.queue_job(job)
        assert broker.take(manager=OTHER_MANAGER, worker=OTHER_WORKER) == []
        assert broker.take(manager=MANAGER, worker=WORKER_2) == [job]

    def test_job_queued_on_a_worker_is_taken_only_by_it(self, broker: Broker) -> None:
        job = Job.new({"for": WORKER}, worker=WORKER)
        broker.queue_job(job)
        assert broker.held_job_ids(WORKER) == [job.id]
        assert broker.take(manager=MANAGER, worker=WORKER_2) == []
        assert broker.take(manager=MANAGER, worker=WORKER) == [job]

    def test_limit_is_respected_and_batches(self, broker: Broker) -> None:
        jobs = make_jobs(7)
        broker.queue_jobs(jobs)
        first = broker.take(manager=MANAGER, worker=WORKER, limit=3)
        second = broker.take(manager=MANAGER, worker=WORKER, held=ids(first), limit=3)
        third = broker.take(manager=MANAGER, worker=WORKER, held=ids(first + second), limit=3)
        assert [len(first), len(second), len(third)] == [3, 3, 1]
        assert first + second + third == jobs

    def test_limit_never_exceeds_max_take(self, broker: Broker) -> None:
        max_take = broker.capabilities.max_take
        broker.queue_jobs(make_jobs(max_take + 1))
        assert len(broker.take(manager=MANAGER, worker=WORKER, limit=max_take + 1)) == max_take

    def test_limit_zero_only_finishes(self, broker: Broker) -> None:
        first, second = make_jobs(2)
        broker.queue_jobs([first, second])
        broker.take(manager=MANAGER, worker=WORKER)
        assert broker.take(manager=MANAGER, worker=WORKER, finished=[first.id], limit=0) == []
        assert broker.get_job(first.id) is None
        assert broker.queued_job_ids() == [second.id]
        assert broker.held_job_ids(WORKER) == []

    # -- blocking ------------------------------------------------------------------

    def test_blocking_take_returns_nothing_after_its_timeout(self, broker: Broker) -> None:
        started = time.monotonic()
        assert broker.take(manager=MANAGER, worker=WORKER, timeout=0.3) == []
        assert time.monotonic() - started < 2.0

    @pytest.mark.parametrize("queue", ["shared", "manager", "worker"])
    def test_blocked_take_wakes_when_a_job_is_queued(self, broker: Broker, queue: str) -> None:
        job = {
            "shared": Job.new({"n": 1}),
            "manager": Job.new({"n": 1}, manager=MANAGER),
            "worker": Job.new({"n": 1}, worker=WORKER),
        }[queue]
        taken, waited = take_while_blocked(
            broker, blocked=lambda: self.blocked_takers(broker) > 0, act=lambda: broker.queue_job(job)
        )
        assert taken == [job]
        assert waited < WOKEN_WITHIN

    def test_a_job_whose_take_reply_was_lost_is_handed_out_again_never_one_held(self, broker: Broker) -> None:
        # A worker running jobs at once takes while some run; a take whose reply it never
        # saw left a job on its list after them. The next take hands out that job, never
        # one of those it holds, wherever they are on its list.
        running, lost, later = make_jobs(3)
        broker.queue_jobs([running, lost, later])
        assert broker.take(manager=MANAGER, worker=WORKER) == [running]
        assert broker.take(manager=MANAGER, worker=WORKER, held=[running.id]) == [lost]  # reply lost
        taken = broker.take(manager=MANAGER, worker=WORKER, held=[running.id], limit=2)
        assert ids(taken) == [lost.id, later.id], "the lost one first, then the queue"
        assert broker.take(manager=MANAGER, worker=WORKER, held=[running.id, lost.id, later.id]) == []

    def test_a_nudge_ends_a_blocked_take_at_once(self, broker: Broker) -> None:
        with opened(broker.factory()) as other, ThreadPoolExecutor(1) as pool:
            taking = pool.submit(other.take, manager=MANAGER, worker=WORKER, timeout=30)
            deadline = time.monotonic() + 10
            while self.blocked_takers(broker) == 0:
                assert not taking.done(), "the take returned without waiting"
                assert time.monotonic() < deadline, "the take never blocked"
                time.sleep(0.005)
            nudged = time.monotonic()
            broker.nudge(WORKER)
            assert taking.result(timeout=WOKEN_WITHIN) == []
            assert time.monotonic() - nudged < WOKEN_WITHIN

    def test_a_nudge_before_a_take_ends_its_wait_and_only_that_one(self, broker: Broker) -> None:
        broker.nudge(WORKER)
        started = time.monotonic()
        assert broker.take(manager=MANAGER, worker=WORKER, timeout=30) == []
        assert time.monotonic() - started < WOKEN_WITHIN
        started = time.monotonic()
        assert broker.take(manager=MANAGER, worker=WORKER, timeout=0.3) == []
        assert time.monotonic() - started >= 0.25, "the nudge was used up"

    def test_a_nudge_takes_nothing_and_a_job_queued_meanwhile_is_taken(self, broker: Broker) -> None:
        broker.nudge(WORKER)
        job = Job.new({"n": 1})
        broker.queue_job(job)
        assert broker.take(manager=MANAGER, worker=WORKER, timeout=5) == [job]
        assert broker.queued_job_ids() == []

    @pytest.mark.parametrize("how", ["retry", "release", "recover", "requeue_failed"])
    def test_blocked_take_wakes_when_a_job_is_put_back(self, broker: Broker, how: str) -> None:
        job = Job.new({"n": 1})
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        if how == "requeue_failed":
            broker.fail_job(worker=WORKER, job=job, failure=Failure(exc_type="E", message="m"))
        act: Callable[[], object] = {
            "retry": lambda: broker.retry_job(worker=WORKER, job=job),
            "release": lambda: broker.release_jobs(worker=WORKER, job_ids=[job.id]),
            "recover": lambda: broker.recover_worker(manager=MANAGER, worker=WORKER),
            "requeue_failed": lambda: broker.requeue_failed(job.id),
        }[how]
        taken, waited = take_while_blocked(
            broker, blocked=lambda: self.blocked_takers(broker) > 0, act=act, worker=WORKER_2
        )
        assert ids(taken) == [job.id]
        assert waited < WOKEN_WITHIN

    # -- finishing -----------------------------------------------------------------

    def test_finish_removes_the_job(self, broker: Broker) -> None:
        first, second = make_jobs(2)
        broker.queue_jobs([first, second])
        broker.take(manager=MANAGER, worker=WORKER, limit=2)
        assert broker.finish_jobs(worker=WORKER, job_ids=[first.id, "no-such-job"]) == [True, False]
        assert broker.get_job(first.id) is None
        assert broker.held_job_ids(WORKER) == [second.id]

    def test_take_finishes_then_takes(self, broker: Broker) -> None:
        first, second = make_jobs(2)
        broker.queue_jobs([first, second])
        broker.take(manager=MANAGER, worker=WORKER)
        assert broker.take(manager=MANAGER, worker=WORKER, finished=[first.id]) == [second]
        assert broker.get_job(first.id) is None
        assert broker.held_job_ids(WORKER) == [second.id]

    def test_finish_is_guarded_by_the_held_list(self, broker: Broker) -> None:
        job = Job.new({"n": 1})
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 1
        assert broker.take(manager=MANAGER, worker=WORKER_2) == [job]
        # The first worker was wrongly thought dead; its late finish must change nothing.
        assert broker.finish_jobs(worker=WORKER, job_ids=[job.id]) == [False]
        broker.take(manager=MANAGER, worker=WORKER, finished=[job.id], limit=0)
        assert broker.get_job(job.id) == job
        assert broker.held_job_ids(WORKER_2) == [job.id]

    def test_still_held_says_which_jobs_the_worker_holds_now(self, broker: Broker) -> None:
        first, second, third = make_jobs(3)
        broker.queue_jobs([first, second, third])
        broker.take(manager=MANAGER, worker=WORKER, limit=3)
        assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 3
        assert broker.take(manager=MANAGER, worker=WORKER_2) == [first]
        broker.take(manager=MANAGER, worker=WORKER, limit=1)  # second, taken again
        assert broker.still_held(worker=WORKER, job_ids=[first.id, second.id, third.id]) == [
            False,
            True,
            False,
        ]
        assert broker.still_held(worker=WORKER, job_ids=[]) == []

    # -- queueing is idempotent ----------------------------------------------------

    def test_queueing_a_job_that_is_queued_or_held_again_changes_nothing(self, broker: Broker) -> None:
        # A producer's call retried after a timeout must not queue a job twice: a second
        # copy would run again, after the first had deleted its data.
        job, other = make_jobs(2)
        broker.queue_jobs([job, job])
        broker.queue_job(job)
        assert broker.queued_job_ids() == [job.id]
        assert broker.take(manager=MANAGER, worker=WORKER) == [job]
        changed = Job(id=job.id, data={"changed": True}, queued_at=job.queued_at)
        broker.queue_jobs([changed, other])
        assert broker.queued_job_ids() == [other.id]
        assert broker.held_job_ids(WORKER) == [job.id]
        assert broker.get_job(job.id) == job, "the held job keeps the data it was queued with"
        assert broker.take(manager=MANAGER, worker=WORKER, finished=[job.id], held=[]) == [other]
        assert broker.get_job(job.id) is None

    def test_queueing_a_delayed_job_again_changes_nothing(self, broker: Broker) -> None:
        if not broker.capabilities.delayed:
            pytest.skip("the backend does not keep delayed jobs (capabilities.delayed is false)")
        job = Job.new({"n": 1})
        broker.queue_jobs([job], delay=30)
        changed = Job(id=job.id, data={"changed": True}, queued_at=job.queued_at)
        broker.queue_jobs([changed], delay=0.1)
        broker.queue_job(changed)
        assert broker.delayed_job_ids() == [job.id]
        assert broker.queued_job_ids() == []
        assert broker.get_job(job.id) == job, "its data as first queued"
        assert broker.take(manager=MANAGER, worker=WORKER, timeout=0.3) == [], "nor due any sooner"

    def test_a_finished_job_may_be_queued_again_under_its_id(self, broker: Broker) -> None:
        job = Job.new({"n": 1})
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        broker.finish_jobs(worker=WORKER, job_ids=[job.id])
        broker.queue_job(job)
        assert broker.take(manager=MANAGER, worker=WORKER_2) == [job]
