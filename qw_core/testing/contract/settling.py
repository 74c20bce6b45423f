"""The broker contract, in part: settling jobs: failing, retrying, releasing, recovering; membership.

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import pytest

from qw_core.broker import Broker
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
    poll_take,
    take_while_blocked,
)
from qw_core.testing.contract.base import ContractPart


class SettlingContract(ContractPart):
    """Settling jobs: failing, retrying, releasing, recovering; membership."""

    # -- failing, retrying, releasing ------------------------------------------------

    def test_fail_job_moves_it_to_the_failed_registry(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, manager=MANAGER)
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        failure = Failure(exc_type="builtins.ValueError", message="bad", traceback="tb", worker=WORKER)
        assert broker.fail_job(worker=WORKER, job=job, failure=failure)
        [failed] = broker.failed_jobs()
        assert failed.job == attrs.evolve(job, attempts=1), "kept with the run that failed counted"
        assert attrs.evolve(failed.failure, failed_at=failure.failed_at) == failure
        assert abs(failed.failure.failed_at - time.time()) < 60, "recorded at the backend's time"
        assert broker.held_job_ids(WORKER) == []
        assert broker.queued_job_ids(MANAGER) == []
        assert broker.get_job(job.id) == failed.job
        assert broker.take(manager=MANAGER, worker=WORKER) == []

    def test_failed_jobs_are_listed_newest_first(self, broker: Broker) -> None:
        jobs = make_jobs(3)
        broker.queue_jobs(jobs)
        broker.take(manager=MANAGER, worker=WORKER, limit=3)
        for job in jobs:
            failure = Failure(exc_type="builtins.RuntimeError", message=str(job.data))
            assert broker.fail_job(worker=WORKER, job=job, failure=failure)
        assert [f.job.id for f in broker.failed_jobs()] == ids(reversed(jobs))
        assert [f.job.id for f in broker.failed_jobs(limit=2)] == ids(reversed(jobs))[:2]

    def test_fail_jobs_fails_each_held_job_and_says_which(self, broker: Broker) -> None:
        jobs = make_jobs(4)
        broker.queue_jobs(jobs)
        broker.take(manager=MANAGER, worker=WORKER, limit=4)
        broker.finish_jobs(worker=WORKER, job_ids=[jobs[1].id])  # no longer held
        failures = [(job, Failure(exc_type="builtins.ValueError", message=str(job.data))) for job in jobs]
        assert broker.fail_jobs(worker=WORKER, failures=failures) == [True, False, True, True]
        expected = [jobs[3], jobs[2], jobs[0]]
        assert [f.job for f in broker.failed_jobs()] == [attrs.evolve(j, attempts=1) for j in expected]
        assert [f.failure.message for f in broker.failed_jobs()] == [str(j.data) for j in expected]
        assert broker.held_job_ids(WORKER) == []
        assert broker.fail_jobs(worker=WORKER, failures=[]) == []

    def test_requeue_failed_resets_attempts(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, manager=MANAGER)
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        tried = attrs.evolve(job, attempts=3)
        broker.fail_job(worker=WORKER, job=tried, failure=Failure(exc_type="E", message="m"))
        assert broker.requeue_failed(job.id)
        assert not broker.requeue_failed(job.id)
        assert not broker.requeue_failed("no-such-job")
        assert broker.failed_jobs() == []
        assert broker.queued_job_ids(MANAGER) == [job.id]
        assert broker.take(manager=MANAGER, worker=WORKER) == [job]

    def test_retry_requeues_with_attempts_incremented(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, manager=MANAGER)
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        changed = attrs.evolve(job, data={"n": 2}, meta={"retry": "yes"})
        assert broker.retry_job(worker=WORKER, job=changed)
        assert broker.held_job_ids(WORKER) == []
        assert broker.queued_job_ids(MANAGER) == [job.id]
        [again] = broker.take(manager=MANAGER, worker=WORKER)
        assert again == attrs.evolve(changed, attempts=1)

    def test_retry_delay_is_honoured(self, broker: Broker) -> None:
        delay = 0.4
        job = Job.new({"n": 1})
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        retried_at = time.monotonic()
        assert broker.retry_job(worker=WORKER, job=job, delay=delay)
        if broker.capabilities.delayed:
            assert broker.take(manager=MANAGER, worker=WORKER_2) == []
        taken, taken_at = poll_take(broker, worker=WORKER_2, timeout=5.0, step=0.1)
        assert taken == [attrs.evolve(job, attempts=1)]
        if broker.capabilities.delayed:
            assert taken_at - retried_at >= delay - 0.05
        assert broker.get_job(job.id) == attrs.evolve(job, attempts=1)

    def test_blocked_take_wakes_when_a_delayed_job_is_due(self, broker: Broker) -> None:
        job = Job.new({"n": 1})
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        taken, waited = take_while_blocked(
            broker,
            blocked=lambda: self.blocked_takers(broker) > 0,
            act=lambda: broker.retry_job(worker=WORKER, job=job, delay=0.3),
            worker=WORKER_2,
        )
        assert ids(taken) == [job.id]
        assert 0.25 <= waited < WOKEN_WITHIN

    def test_release_puts_jobs_back_at_the_front(self, broker: Broker) -> None:
        jobs = make_jobs(4)
        broker.queue_jobs(jobs)
        taken = broker.take(manager=MANAGER, worker=WORKER, limit=2)
        assert broker.release_jobs(worker=WORKER, job_ids=ids(taken)) == 2
        assert broker.queued_job_ids() == ids(jobs)
        assert broker.held_job_ids(WORKER) == []
        assert broker.take(manager=MANAGER, worker=WORKER_2, limit=4) == jobs  # attempts unchanged

    def test_release_puts_each_job_back_on_its_own_queue(self, broker: Broker) -> None:
        mine, shared = Job.new({"n": 1}, manager=MANAGER), Job.new({"n": 2})
        broker.queue_jobs([mine, shared])
        broker.take(manager=MANAGER, worker=WORKER, limit=2)
        assert broker.release_jobs(worker=WORKER, job_ids=[mine.id, shared.id, "no-such-job"]) == 2
        assert broker.queued_job_ids(MANAGER) == [mine.id]
        assert broker.queued_job_ids() == [shared.id]

    @pytest.mark.parametrize("how", ["fail", "retry", "release"])
    def test_settling_is_guarded_by_the_held_list(self, broker: Broker, how: str) -> None:
        job = Job.new({"n": 1})
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        failure = Failure(exc_type="builtins.ValueError", message="bad")
        settle: Callable[[], object] = {
            "fail": lambda: broker.fail_job(worker=WORKER_2, job=job, failure=failure),
            "retry": lambda: broker.retry_job(worker=WORKER_2, job=job),
            "release": lambda: broker.release_jobs(worker=WORKER_2, job_ids=[job.id]),
        }[how]
        assert not settle()
        assert broker.held_job_ids(WORKER) == [job.id]
        assert broker.get_job(job.id) == job
        assert broker.failed_jobs() == []
        assert broker.queued_job_ids() == []

    # -- a job queued onto a worker, settled before the worker took it ----------------

    def _settle_untaken(self, broker: Broker, how: str, worker: str) -> Job:
        """Queue a job straight onto ``worker`` and settle it (``how``) before it is taken;
        a failed one is requeued from the failed registry, which sends it where a retry would."""
        job = Job.new({"n": 1}, worker=worker)
        broker.queue_job(job)
        if how == "fail":
            assert broker.fail_job(worker=worker, job=job, failure=Failure(exc_type="E", message="bad"))
            assert broker.requeue_failed(job.id)
        elif how == "retry":
            assert broker.retry_job(worker=worker, job=job)
        else:
            assert broker.release_jobs(worker=worker, job_ids=[job.id]) == 1
        return job

    def _skip_unless_registered_managers(self, broker: Broker) -> None:
        if not broker.capabilities.registered_managers:
            pytest.skip(
                "the backend does not send a job its worker never took to the manager the worker "
                "registered under (capabilities.registered_managers is false)"
            )

    @pytest.mark.parametrize("how", ["fail", "retry", "release"])
    @pytest.mark.parametrize("worker", ["w-7", f"{OTHER_MANAGER}.301"])
    def test_a_job_its_worker_never_took_goes_back_to_the_manager_it_registered_under(
        self, broker: Broker, how: str, worker: str
    ) -> None:
        # Neither name is <MANAGER>.<pid>: only the registration says whose the worker is.
        self._skip_unless_registered_managers(broker)
        broker.register_worker(manager=MANAGER, worker=worker)
        job = self._settle_untaken(broker, how, worker)
        assert broker.queued_job_ids(MANAGER) == [job.id]
        assert broker.queued_job_ids() == []
        assert broker.queued_job_ids(OTHER_MANAGER) == []
        assert ids(broker.take(manager=MANAGER, worker=WORKER_2)) == [job.id]

    @pytest.mark.parametrize("how", ["fail", "retry", "release"])
    @pytest.mark.parametrize("left", ["first", "last"])
    def test_a_job_its_worker_never_took_goes_to_a_manager_it_is_still_registered_under(
        self, broker: Broker, how: str, left: str
    ) -> None:
        # Registered under two (running) managers, then deregistered from the one it
        # registered under first, or last: the other still has it.
        self._skip_unless_registered_managers(broker)
        broker.register_manager(MANAGER)
        broker.register_manager(OTHER_MANAGER)
        order = [OTHER_MANAGER, MANAGER] if left == "first" else [MANAGER, OTHER_MANAGER]
        for manager in order:
            broker.register_worker(manager=manager, worker="w-7")
        broker.deregister_worker(manager=OTHER_MANAGER, worker="w-7")
        assert broker.recover_worker(manager=OTHER_MANAGER, worker="w-7") == 0
        job = self._settle_untaken(broker, how, "w-7")
        assert broker.queued_job_ids(MANAGER) == [job.id]
        assert broker.queued_job_ids() == []

    @pytest.mark.parametrize("how", ["fail", "retry", "release"])
    def test_a_job_an_unregistered_worker_never_took_goes_to_the_manager_its_name_says(
        self, broker: Broker, how: str
    ) -> None:
        self._skip_unless_registered_managers(broker)
        job = self._settle_untaken(broker, how, f"{OTHER_MANAGER}.301")
        assert broker.queued_job_ids(OTHER_MANAGER) == [job.id]
        other = self._settle_untaken(broker, how, "w-7")  # a name that says no manager
        assert broker.queued_job_ids() == [other.id]

    # -- recovery ------------------------------------------------------------------

    def test_recover_worker_puts_jobs_back_where_they_came_from(self, broker: Broker) -> None:
        shared = Job.new({"n": 1})
        mine = Job.new({"n": 2}, manager=MANAGER)
        direct = Job.new({"n": 3}, worker=WORKER)
        broker.queue_jobs([shared, mine, direct])
        broker.register_worker(manager=MANAGER, worker=WORKER)
        broker.register_worker(manager=MANAGER, worker=WORKER_2)
        assert len(broker.take(manager=MANAGER, worker=WORKER, limit=3)) == 3
        assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 3
        assert broker.held_job_ids(WORKER) == []
        assert broker.queued_job_ids() == [shared.id]
        assert broker.queued_job_ids(MANAGER) == [direct.id, mine.id], "in the order it took them"
        assert broker.workers(MANAGER) == [WORKER_2]
        assert broker.get_job(direct.id) == direct

    def test_recovered_jobs_go_back_to_the_front_in_the_order_they_were_taken(self, broker: Broker) -> None:
        taken, behind = make_jobs(5), make_jobs(2)
        broker.queue_jobs(taken + behind)
        assert broker.take(manager=MANAGER, worker=WORKER, limit=5) == taken
        assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 5
        assert broker.queued_job_ids() == ids(taken + behind)
        assert drain(broker, worker=WORKER_2, limit=3) == taken + behind

    def test_untaken_direct_jobs_go_to_the_back_of_the_managers_queue(self, broker: Broker) -> None:
        waiting = Job.new({"n": 0}, manager=MANAGER)
        direct = make_jobs(3, worker=WORKER)
        broker.queue_jobs([waiting, *direct])
        assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 3
        assert broker.queued_job_ids(MANAGER) == ids([waiting, *direct])

    def test_recover_worker_returns_untaken_direct_jobs_to_its_manager(self, broker: Broker) -> None:
        direct = Job.new({"n": 1}, worker=WORKER)
        broker.queue_job(direct)
        assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 1
        assert broker.queued_job_ids(MANAGER) == [direct.id]
        assert broker.take(manager=MANAGER, worker=WORKER_2) == [direct]

    def test_recover_worker_is_idempotent(self, broker: Broker) -> None:
        broker.register_worker(manager=MANAGER, worker=WORKER)
        assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 0
        assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 0
        assert broker.workers(MANAGER) == []

    def test_recovered_jobs_keep_their_attempts(self, broker: Broker) -> None:
        job = attrs.evolve(Job.new({"n": 1}), attempts=2)
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        broker.recover_worker(manager=MANAGER, worker=WORKER)
        assert broker.take(manager=MANAGER, worker=WORKER_2) == [job]

    # -- counts ----------------------------------------------------------------------

    def test_counts_agree_with_the_listings(self, broker: Broker) -> None:
        mine = [Job.new({"m": n}, manager=MANAGER) for n in range(2)]
        broker.queue_jobs([*(Job.new({"n": n}) for n in range(3)), *mine])
        broker.take(manager=MANAGER, worker=WORKER, limit=1)  # the manager's queue first
        if broker.capabilities.delayed:
            broker.queue_jobs([Job.new({"d": 1}), Job.new({"d": 2}, manager=MANAGER)], delay=60)
        assert (broker.queued_count(), broker.queued_count(MANAGER), broker.held_count(WORKER)) == (3, 1, 1)
        for manager in (None, MANAGER, OTHER_MANAGER):
            assert broker.queued_count(manager) == len(broker.queued_job_ids(manager))
            assert broker.delayed_count(manager) == len(broker.delayed_job_ids(manager))
        for worker in (WORKER, WORKER_2):
            assert broker.held_count(worker) == len(broker.held_job_ids(worker))

    # -- membership ------------------------------------------------------------------

    def test_managers_register_idempotently_and_list_sorted(self, broker: Broker) -> None:
        for name in ["m2", "m1", "m3", "m1"]:
            broker.register_manager(name)
        assert broker.managers() == ["m1", "m2", "m3"]
        broker.deregister_manager("m2")
        broker.deregister_manager("m2")
        broker.deregister_manager("never-registered")
        assert broker.managers() == ["m1", "m3"]

    def test_workers_register_idempotently_per_manager(self, broker: Broker) -> None:
        for worker in [WORKER_2, WORKER, WORKER_2]:
            broker.register_worker(manager=MANAGER, worker=worker)
        broker.register_worker(manager=OTHER_MANAGER, worker=OTHER_WORKER)
        assert broker.workers(MANAGER) == sorted([WORKER, WORKER_2])
        assert broker.workers(OTHER_MANAGER) == [OTHER_WORKER]
        assert broker.workers("nobody") == []
        broker.deregister_worker(manager=MANAGER, worker=WORKER)
        broker.deregister_worker(manager=MANAGER, worker=WORKER)
        assert broker.workers(MANAGER) == [WORKER_2]

    def test_deregistering_a_worker_leaves_its_jobs_held(self, broker: Broker) -> None:
        job = Job.new({"n": 1})
        broker.queue_job(job)
        broker.register_worker(manager=MANAGER, worker=WORKER)
        broker.take(manager=MANAGER, worker=WORKER)
        broker.deregister_worker(manager=MANAGER, worker=WORKER)
        assert broker.held_job_ids(WORKER) == [job.id]
