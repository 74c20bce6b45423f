"""The broker contract, in part: delayed jobs and the failed-job registry.

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

import datetime
import time
from concurrent.futures import ThreadPoolExecutor

import attrs
import pytest

from qw_core.broker import MAX_DELAY, Broker
from qw_core.errors import ConfigurationError, InvalidJob
from qw_core.models import Failure, Job
from qw_core.policy import FailedLimits
from qw_core.testing import (
    MANAGER,
    OTHER_MANAGER,
    OTHER_WORKER,
    WOKEN_WITHIN,
    WORKER,
    WORKER_2,
    ids,
    make_jobs,
    opened,
    poll_take,
    take_while_blocked,
)
from qw_core.testing.contract.base import ContractPart


class SchedulingContract(ContractPart):
    """Delayed jobs and the failed-job registry."""

    # -- delayed jobs ----------------------------------------------------------------

    @staticmethod
    def _needs_delays(broker: Broker) -> None:
        if not broker.capabilities.delayed:
            pytest.skip("the backend does not keep delayed jobs (capabilities.delayed is false)")

    def test_a_take_that_does_not_wait_still_takes_a_due_job(self, broker: Broker) -> None:
        # A busy worker never waits (its queue is never empty): due jobs must reach it too.
        self._needs_delays(broker)
        job = Job.new({"n": 1})
        broker.queue_jobs([job], delay=0.1)
        time.sleep(0.15)  # past the due time: the test is about what a take does then
        assert broker.take(manager=MANAGER, worker=WORKER, timeout=0) == [job]

    def test_delayed_job_waits_then_is_taken(self, broker: Broker) -> None:
        self._needs_delays(broker)
        delay = 0.4
        job = Job.new({"n": 1})
        queued_at = time.monotonic()
        broker.queue_jobs([job], delay=delay)
        assert broker.take(manager=MANAGER, worker=WORKER) == []
        assert broker.delayed_job_ids() == [job.id]
        assert broker.queued_job_ids() == []
        assert broker.get_job(job.id) == job
        taken, taken_at = poll_take(broker, timeout=5.0, step=0.1)
        assert taken == [job]
        assert taken_at - queued_at >= delay - 0.05
        assert broker.delayed_job_ids() == []
        assert broker.held_job_ids(WORKER) == [job.id]

    def test_delayed_job_goes_to_its_own_queue_when_due(self, broker: Broker) -> None:
        self._needs_delays(broker)
        mine, shared = Job.new({"n": 1}, manager=MANAGER), Job.new({"n": 2})
        broker.queue_jobs([mine, shared], delay=0.2)
        assert broker.delayed_job_ids(MANAGER) == [mine.id]
        assert broker.delayed_job_ids() == [shared.id]
        assert broker.delayed_job_ids(OTHER_MANAGER) == []
        taken, _ = poll_take(broker, manager=OTHER_MANAGER, worker=OTHER_WORKER, timeout=5.0, step=0.1)
        assert taken == [shared]
        assert broker.take(manager=OTHER_MANAGER, worker=OTHER_WORKER, held=[shared.id]) == []
        assert broker.queued_job_ids(MANAGER) == [mine.id]
        assert broker.take(manager=MANAGER, worker=WORKER) == [mine]

    def test_a_delayed_batch_keeps_its_order(self, broker: Broker) -> None:
        self._needs_delays(broker)
        jobs = make_jobs(5)
        broker.queue_jobs(jobs, delay=0.2)
        assert broker.delayed_job_ids() == ids(jobs)
        first, _ = poll_take(broker, timeout=5.0, step=0.1)
        assert first == jobs[:1]
        assert broker.take(manager=MANAGER, worker=WORKER, held=ids(first), limit=10) == jobs[1:]

    def test_queue_job_at_a_time(self, broker: Broker) -> None:
        self._needs_delays(broker)
        now = datetime.datetime.now(datetime.timezone.utc)
        later, past = Job.new({"n": 1}), Job.new({"n": 2})
        broker.queue_job(later, at=now + datetime.timedelta(seconds=0.3))
        broker.queue_job(past, at=now - datetime.timedelta(hours=1))
        assert broker.delayed_job_ids() == [later.id]
        assert broker.take(manager=MANAGER, worker=WORKER) == [past]
        taken, _ = poll_take(broker, worker=WORKER_2, timeout=5.0, step=0.1)
        assert taken == [later]
        with pytest.raises(ConfigurationError):
            broker.queue_job(Job.new({}), delay=1, at=now)

    @pytest.mark.parametrize("when", ["delay", "at"])
    def test_a_delay_longer_than_the_longest_is_refused_and_nothing_is_written(
        self, broker: Broker, when: str
    ) -> None:
        self._needs_delays(broker)
        job = Job.new({"n": 1})
        far = {"delay": MAX_DELAY * 2} if when == "delay" else {"at": time.time() + MAX_DELAY * 2}
        with pytest.raises(ConfigurationError, match="at most 100 years"):
            broker.queue_jobs([job], **far)
        assert broker.get_job(job.id) is None
        assert broker.delayed_job_ids() == []

    def test_delaying_a_job_queued_on_a_worker_is_refused(self, broker: Broker) -> None:
        valid, direct = Job.new({"n": 1}), Job.new({"n": 2}, worker=WORKER)
        with pytest.raises(InvalidJob):
            broker.queue_jobs([valid, direct], delay=1)
        assert broker.get_job(valid.id) is None
        assert broker.get_job(direct.id) is None
        assert broker.held_job_ids(WORKER) == []

    def test_blocked_take_wakes_when_a_queued_delayed_job_is_due(self, broker: Broker) -> None:
        self._needs_delays(broker)
        job = Job.new({"n": 1})
        taken, waited = take_while_blocked(
            broker,
            blocked=lambda: self.blocked_takers(broker) > 0,
            act=lambda: broker.queue_jobs([job], delay=0.3),
        )
        assert taken == [job]
        assert 0.25 <= waited < WOKEN_WITHIN, "taken when due, not before, and not at the end of its wait"

    def test_due_jobs_are_taken_exactly_once_by_racing_takers(self, broker: Broker) -> None:
        self._needs_delays(broker)
        jobs = make_jobs(300)
        broker.queue_jobs(jobs, delay=0.3)
        factory = broker.factory()
        workers = [f"{MANAGER}.{300 + n}" for n in range(4)]

        def work(worker: str) -> list[str]:
            taken: list[str] = []
            with opened(factory) as mine:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    batch = mine.take(
                        manager=MANAGER, worker=worker, finished=taken[-10:], limit=10, timeout=0.2
                    )
                    taken += ids(batch)
                    if not batch and not mine.delayed_job_ids() and not mine.queued_job_ids():
                        break
            return taken

        with ThreadPoolExecutor(len(workers)) as pool:
            results = list(pool.map(work, workers))
        everything = [job_id for result in results for job_id in result]
        assert sorted(everything) == sorted(ids(jobs))
        assert broker.delayed_job_ids() == broker.queued_job_ids() == []

    # -- the failed-job registry -----------------------------------------------------

    def _fail(
        self, broker: Broker, jobs: list[Job], limits: FailedLimits | None = None, *, clock_skew: float = 0.0
    ) -> None:
        """Queue, take and fail ``jobs``, in order; each failure stamped by a host whose
        clock is ``clock_skew`` seconds off."""
        broker.queue_jobs(jobs)
        broker.take(manager=MANAGER, worker=WORKER, limit=len(jobs))
        for n, job in enumerate(jobs):
            failed_at = time.time() + clock_skew
            failure = Failure(exc_type="builtins.ValueError", message=f"bad {n}", failed_at=failed_at)
            kwargs = {} if limits is None else {"limits": limits}
            assert broker.fail_job(worker=WORKER, job=job, failure=failure, **kwargs)

    def test_failed_count_and_get_failed(self, broker: Broker) -> None:
        jobs = make_jobs(3)
        assert broker.failed_count() == 0
        self._fail(broker, jobs)
        assert broker.failed_count() == 3
        found = broker.get_failed(jobs[1].id)
        assert found is not None
        assert found.job == attrs.evolve(jobs[1], attempts=1)
        assert found.failure.message == "bad 1"
        assert broker.get_failed("no-such-job") is None

    def test_purge_failed_some_then_all(self, broker: Broker) -> None:
        jobs = make_jobs(4)
        self._fail(broker, jobs)
        assert broker.purge_failed([jobs[0].id, "no-such-job", jobs[0].id]) == 1
        assert broker.get_failed(jobs[0].id) is None
        assert broker.get_job(jobs[0].id) is None
        assert broker.failed_count() == 3
        assert broker.purge_failed() == 3
        assert broker.failed_jobs() == []
        assert all(broker.get_job(job.id) is None for job in jobs)
        assert not broker.requeue_failed(jobs[1].id)

    def test_failed_registry_keeps_at_most_max_count_newest(self, broker: Broker) -> None:
        jobs = make_jobs(5)
        self._fail(broker, jobs, FailedLimits(max_count=3, max_age=None))
        assert broker.failed_count() == 3
        assert [f.job.id for f in broker.failed_jobs()] == ids(reversed(jobs[2:]))
        assert broker.get_failed(jobs[0].id) is None
        assert broker.get_job(jobs[0].id) is None

    def test_failed_registry_drops_entries_older_than_max_age(self, broker: Broker) -> None:
        old, new = make_jobs(2)
        self._fail(broker, [old])
        time.sleep(0.25)  # the age bound is about time passing, by the backend's clock
        self._fail(broker, [new], FailedLimits(max_count=None, max_age=0.2))
        assert [f.job.id for f in broker.failed_jobs()] == [new.id]
        assert broker.get_job(old.id) is None

    def test_failed_registry_goes_by_the_backends_clock_not_the_failing_hosts(self, broker: Broker) -> None:
        # A host whose clock runs a month fast fails a job: with the default 30-day bound
        # the older entries stay (a host's clock must not decide what another keeps), and
        # the failure is recorded at the backend's time.
        before = make_jobs(3)
        self._fail(broker, before)
        [fast] = make_jobs(1)
        self._fail(broker, [fast], FailedLimits(), clock_skew=31 * 86400)
        assert broker.failed_count() == 4
        found = broker.get_failed(fast.id)
        assert found is not None
        assert abs(found.failure.failed_at - time.time()) < 3600, "stamped by the backend's clock"
        [slow] = make_jobs(1)
        self._fail(broker, [slow], FailedLimits(max_age=3600.0), clock_skew=-31 * 86400)
        assert broker.failed_count() == 5, "a slow host's clock does not age the others either"

    def test_requeued_failed_job_runs_again_and_can_fail_again(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, manager=MANAGER)
        self._fail(broker, [job])
        assert broker.requeue_failed(job.id)
        assert broker.failed_count() == 0
        [again] = broker.take(manager=MANAGER, worker=WORKER_2)
        assert again == job
        failure = Failure(exc_type="builtins.ValueError", message="again")
        assert broker.fail_job(worker=WORKER_2, job=again, failure=failure)
        found = broker.get_failed(job.id)
        assert found is not None
        assert found.failure.message == "again"

    def test_requeue_leaves_a_live_job_with_the_same_id_alone(self, broker: Broker) -> None:
        job = Job.new({"n": 1})
        self._fail(broker, [job])
        live = Job(id=job.id, data={"n": 2}, queued_at=job.queued_at)
        broker.queue_job(live)
        assert not broker.requeue_failed(job.id), "its data would overwrite the live job's"
        assert broker.failed_count() == 1
        assert broker.queued_job_ids() == [job.id]
        assert broker.take(manager=MANAGER, worker=WORKER_2) == [live]
