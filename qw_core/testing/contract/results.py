"""The broker contract, in part: keeping what a finished job returned.

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from qw_core.broker import Broker
from qw_core.models import Job
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
