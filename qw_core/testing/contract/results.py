"""The broker contract, in part: keeping what a finished job returned.

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qw_core.broker import Broker
from qw_core.models import Failure, Job, State
from qw_core.results import JobResult
from qw_core.testing import MANAGER, WOKEN_WITHIN, WORKER, WORKER_2, opened
from qw_core.testing.contract.base import ContractPart


def _taken(broker: Broker) -> Job:
    job = Job.new({"n": 1})
    broker.queue_job(job)
    [taken] = broker.take(manager=MANAGER, worker=WORKER)
    return taken


class ResultsContract(ContractPart):
    """Results: kept with the finish, in one step, for a while; waited for without polling."""

    def test_a_result_is_kept_with_the_jobs_finish(self, broker: Broker) -> None:
        job = _taken(broker)
        before = time.time()
        assert broker.finish_with_result(worker=WORKER, job_id=job.id, result='{"size": [1, 2]}', ttl=60)
        found = broker.get_result(job.id)
        assert found is not None
        assert (found.job_id, found.value, found.worker) == (job.id, {"size": [1, 2]}, WORKER)
        assert before - 5 <= found.finished_at <= time.time() + 5  # the backend's clock
        assert broker.held_job_ids(WORKER) == []
        assert broker.get_job(job.id) is None

    def test_nothing_is_kept_for_a_job_the_worker_no_longer_holds(self, broker: Broker) -> None:
        job = _taken(broker)
        broker.recover_worker(manager=MANAGER, worker=WORKER)
        assert not broker.finish_with_result(worker=WORKER, job_id=job.id, result="1", ttl=60)
        assert broker.get_result(job.id) is None
        assert broker.queued_job_ids() == [job.id]  # still to run, by someone else

    def test_a_job_without_a_result_has_none(self, broker: Broker) -> None:
        job = _taken(broker)
        assert broker.finish_jobs(worker=WORKER, job_ids=[job.id]) == [True]
        assert broker.get_result(job.id) is None
        assert broker.get_result("no-such-job") is None

    def test_a_result_expires_after_its_ttl(self, broker: Broker) -> None:
        job = _taken(broker)
        assert broker.finish_with_result(worker=WORKER, job_id=job.id, result='"soon gone"', ttl=0.2)
        assert broker.get_result(job.id) is not None
        deadline = time.monotonic() + 10
        while broker.get_result(job.id) is not None:
            assert time.monotonic() < deadline, "the result outlived its ttl by 10 s"
            time.sleep(0.05)

    def test_a_kept_result_is_returned_by_a_wait_at_once(self, broker: Broker) -> None:
        job = _taken(broker)
        broker.finish_with_result(worker=WORKER, job_id=job.id, result="[true]", ttl=60)
        started = time.monotonic()
        found = broker.wait_result(job.id, timeout=30)
        assert found is not None
        assert found.value == [True]
        assert time.monotonic() - started < WOKEN_WITHIN

    def test_a_wait_runs_out_with_nothing(self, broker: Broker) -> None:
        job = _taken(broker)
        started = time.monotonic()
        assert broker.wait_result(job.id, timeout=0.3) is None
        assert 0.25 <= time.monotonic() - started < WOKEN_WITHIN

    def test_every_waiter_gets_a_result_kept_while_they_wait(self, broker: Broker) -> None:
        job = _taken(broker)

        def wait() -> tuple[JobResult | None, float]:
            with opened(broker.factory()) as other:
                return other.wait_result(job.id, timeout=30), time.monotonic()

        with ThreadPoolExecutor(2) as pool:
            waiters = [pool.submit(wait) for _ in range(2)]
            time.sleep(0.2)  # let them begin to wait (a result kept before would do as well)
            finished_at = time.monotonic()
            assert broker.finish_with_result(worker=WORKER, job_id=job.id, result='{"ok": 1}', ttl=60)
            for waiter in waiters:
                found, returned_at = waiter.result(timeout=60)
                assert found is not None
                assert found.value == {"ok": 1}
                assert returned_at - finished_at < WOKEN_WITHIN

    def test_a_result_of_a_job_run_again_replaces_the_first(self, broker: Broker) -> None:
        job = _taken(broker)
        broker.finish_with_result(worker=WORKER, job_id=job.id, result="1", ttl=60)
        broker.queue_job(job)  # the same id, queued again once it ended
        [again] = broker.take(manager=MANAGER, worker=WORKER_2)
        assert broker.finish_with_result(worker=WORKER_2, job_id=again.id, result="2", ttl=60)
        found = broker.get_result(job.id)
        assert found is not None
        assert (found.value, found.worker) == (2, WORKER_2)


class StatusContract(ContractPart):
    """Where a job is: :meth:`Broker.job_status`."""

    def test_a_queued_job_is_queued_on_its_queue(self, broker: Broker) -> None:
        named, shared, mine = (
            Job.new({"n": 1}, queue="emails"),
            Job.new({"n": 2}),
            Job.new({}, manager=MANAGER),
        )
        broker.queue_jobs([named, shared, mine])
        found = broker.job_status(named.id)
        assert (found.state, found.queue, found.job) == (State.QUEUED, "emails", named)
        assert (broker.job_status(shared.id).state, broker.job_status(shared.id).queue) == (
            State.QUEUED,
            "default",
        )
        assert broker.job_status(mine.id).queue == f"manager:{MANAGER}"

    def test_a_delayed_job_says_when_it_is_due(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, queue="emails")
        broker.queue_job(job, delay=60)
        found = broker.job_status(job.id)
        assert (found.state, found.queue) == (State.DELAYED, "emails")
        assert found.due_at is not None
        assert 30 < found.due_at - time.time() < 90

    def test_a_held_job_names_its_worker(self, broker: Broker) -> None:
        broker.register_manager(MANAGER)
        broker.register_worker(manager=MANAGER, worker=WORKER)
        job = _taken(broker)
        found = broker.job_status(job.id)
        assert (found.state, found.worker, found.job) == (State.HELD, WORKER, job)

    def test_a_failed_job_says_why(self, broker: Broker) -> None:
        job = _taken(broker)
        failure = Failure(exc_type="ValueError", message="bad size", worker=WORKER)
        assert broker.fail_job(worker=WORKER, job=job, failure=failure)
        found = broker.job_status(job.id)
        assert found.state is State.FAILED
        assert found.failure is not None
        assert (found.failure.message, found.worker) == ("bad size", WORKER)

    def test_a_finished_job_succeeded_while_its_result_is_kept(self, broker: Broker) -> None:
        kept = _taken(broker)
        before = time.time()
        broker.finish_with_result(worker=WORKER, job_id=kept.id, result='"done"', ttl=60)
        found = broker.job_status(kept.id)
        assert found.state is State.SUCCEEDED
        assert found.result is not None
        assert (found.result.value, found.worker) == ("done", WORKER)
        assert found.finished_at is not None
        assert before - 5 <= found.finished_at <= time.time() + 5  # the backend's clock
        assert broker.job_status("never-queued").state is State.UNKNOWN

    def test_a_job_finished_by_a_take_without_a_result_succeeded_while_it_is_remembered(
        self, broker: Broker
    ) -> None:
        job = _taken(broker)
        before = time.time()
        broker.take(manager=MANAGER, worker=WORKER, finished=[job.id], limit=0, keep_finished=60)
        found = broker.job_status(job.id)
        assert (found.state, found.result, found.job) == (State.SUCCEEDED, None, None)
        assert found.finished_at is not None
        assert before - 5 <= found.finished_at <= time.time() + 5  # the backend's clock
        assert broker.job_ids_with_prefix(job.id[:8]) == [job.id]  # `qw job` finds it by its start

    def test_a_job_finished_apart_succeeded_while_it_is_remembered(self, broker: Broker) -> None:
        job = _taken(broker)
        assert broker.finish_jobs(worker=WORKER, job_ids=[job.id], keep_finished=60) == [True]
        assert broker.job_status(job.id).state is State.SUCCEEDED

    def test_a_finished_job_is_forgotten_at_once_when_nothing_is_to_be_kept(self, broker: Broker) -> None:
        first, second = _taken(broker), _taken(broker)
        broker.take(manager=MANAGER, worker=WORKER, finished=[first.id], limit=0)
        broker.finish_jobs(worker=WORKER, job_ids=[second.id], keep_finished=0)
        assert broker.job_status(first.id).state is State.UNKNOWN
        assert broker.job_status(second.id).state is State.UNKNOWN
        assert broker.job_ids_with_prefix(first.id) == []

    def test_a_finish_that_did_nothing_remembers_nothing(self, broker: Broker) -> None:
        job = _taken(broker)
        broker.recover_worker(manager=MANAGER, worker=WORKER)  # put back: no longer held
        assert broker.finish_jobs(worker=WORKER, job_ids=[job.id, "never-queued"], keep_finished=60) == [
            False,
            False,
        ]
        assert broker.job_status(job.id).state is State.QUEUED
        assert broker.job_status("never-queued").state is State.UNKNOWN

    def test_a_remembered_job_queued_again_is_queued(self, broker: Broker) -> None:
        job = _taken(broker)
        broker.finish_jobs(worker=WORKER, job_ids=[job.id], keep_finished=60)
        broker.queue_job(job)  # the same id, queued again once it ended
        assert broker.job_status(job.id).state is State.QUEUED

    def test_a_finished_job_is_forgotten_after_its_time(self, broker: Broker) -> None:
        deadline = time.monotonic() + 20
        job = _taken(broker)
        broker.finish_jobs(worker=WORKER, job_ids=[job.id], keep_finished=0.05)
        # A backend may forget lazily (on a later finish): keep finishing others meanwhile.
        while broker.job_status(job.id).state is State.SUCCEEDED:
            assert time.monotonic() < deadline, "a finished job was remembered 20 s past its time"
            other = _taken(broker)
            broker.finish_jobs(worker=WORKER, job_ids=[other.id], keep_finished=0.05)
            time.sleep(0.01)
        assert broker.job_status(job.id).state is State.UNKNOWN

    def test_a_negative_time_to_remember_is_refused(self, broker: Broker) -> None:
        job = _taken(broker)
        with pytest.raises(ValueError, match="0 or more seconds"):
            broker.finish_jobs(worker=WORKER, job_ids=[job.id], keep_finished=-1)
        assert broker.held_job_ids(WORKER) == [job.id]  # refused before anything was done

    def test_a_held_job_says_since_when_its_manager_last_said_so(self, broker: Broker) -> None:
        broker.register_manager(MANAGER)
        broker.register_worker(manager=MANAGER, worker=WORKER)
        job = _taken(broker)
        assert broker.job_status(job.id).since is None  # not reported yet
        broker.beat(
            manager=MANAGER, token="m", workers={WORKER: "w"}, ttl=30, running={WORKER: {job.id: 1234.5}}
        )
        found = broker.job_status(job.id)
        assert (found.state, found.worker, found.since) == (State.HELD, WORKER, 1234.5)
        broker.beat(manager=MANAGER, token="m", workers={WORKER: "w"}, ttl=30, running={WORKER: {}})
        assert broker.job_status(job.id).since is None  # its last beat had it in hand no more
