"""The broker contract, in part: unique jobs (:meth:`Broker.queue_jobs_unique`).

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
A backend without ``capabilities.unique`` must refuse a unique job and queue nothing
(the first test); the others are for backends that keep them.
"""

from __future__ import annotations

import time

import attrs
import pytest

from qw_core.broker import Broker
from qw_core.errors import ConfigurationError, UniqueJobsUnsupported
from qw_core.models import Failure, Job, State
from qw_core.testing import MANAGER, WORKER, WORKER_2, ids
from qw_core.testing.contract.base import ContractPart
from qw_core.unique import Queued, Unique

KEY = "sync-user-42"


def _job(n: int = 0, *, queue: str | None = None) -> Job:
    return Job.new({"n": n}, queue=queue)


def _fail(broker: Broker, job: Job, worker: str = WORKER) -> None:
    assert broker.fail_job(worker=worker, job=job, failure=Failure(exc_type="E", message="m"))


class UniqueContract(ContractPart):
    """Unique jobs: one job per key while the key is held, atomic with the queueing."""

    # Not autouse: BrokerContract mixes every part into one class, where an autouse
    # fixture would run (and skip) for every test of the contract, not only these.
    @pytest.fixture
    def unique_kept(self, broker: Broker) -> None:
        """Run only on a backend that keeps unique jobs (see the refusal test below)."""
        if not broker.capabilities.unique:
            pytest.skip("the backend does not keep unique jobs (capabilities.unique is false)")

    def test_a_backend_keeps_unique_jobs_or_refuses_them_queuing_nothing(self, broker: Broker) -> None:
        first, second = _job(1), _job(2)
        if broker.capabilities.unique:
            assert broker.queue_job(first, unique=KEY) == first.id
            assert broker.queue_job(second, unique=KEY) == first.id
            assert broker.queued_job_ids() == [first.id]
        else:
            with pytest.raises(UniqueJobsUnsupported):
                broker.queue_job(first, unique=KEY)
            with pytest.raises(UniqueJobsUnsupported):
                broker.queue_jobs(
                    [attrs.evolve(second, meta={**second.meta, "unique": {"key": KEY, "until": "end"}})]
                )
            assert broker.queued_job_ids() == [], "a refused unique job is not queued"

    # -- what a duplicate gets ------------------------------------------------------------

    @pytest.mark.usefixtures("unique_kept")
    def test_a_job_whose_key_is_held_gets_the_holders_id_and_is_not_stored(self, broker: Broker) -> None:
        first, second = _job(1), _job(2)
        assert broker.queue_job(first, unique=KEY) == first.id
        assert broker.queue_job(second, unique=KEY) == first.id
        assert broker.queue_job_unique(_job(3), KEY) == Queued(first.id, False)
        assert broker.queued_job_ids() == [first.id]
        assert broker.get_job(second.id) is None
        assert broker.queue_job_unique(_job(4), "another key").created
        assert broker.queue_job(_job(5)) != first.id, "a job without a key is not affected"
        assert len(broker.queued_job_ids()) == 3

    @pytest.mark.usefixtures("unique_kept")
    def test_the_key_travels_in_the_jobs_meta(self, broker: Broker) -> None:
        job = _job()
        broker.queue_job(job, unique=Unique(KEY, until="start"))
        stored = broker.get_job(job.id)
        assert stored is not None
        assert stored.meta["unique"] == {"key": KEY, "until": "start"}
        [taken] = broker.take(manager=MANAGER, worker=WORKER)
        assert taken.meta["unique"] == {"key": KEY, "until": "start"}

    @pytest.mark.usefixtures("unique_kept")
    def test_a_batch_queues_one_job_per_key_and_says_which(self, broker: Broker) -> None:
        jobs = [_job(0), _job(1), _job(2), _job(3, queue="q")]
        keys = [KEY, KEY, "b", KEY]
        keyed = [attrs.evolve(j, meta={"unique": {"key": k}}) for j, k in zip(jobs, keys, strict=True)]
        done = broker.queue_jobs_unique([*keyed, _job(9)])
        created = [q for q in done if q.created]
        assert len(created) == 3, "one per key, and the job without a key"
        holder = next(q.id for q in created if q.id in {keyed[0].id, keyed[1].id, keyed[3].id})
        assert sorted(q.id for q in done if not q.created) == [holder, holder]
        assert broker.queue_jobs([attrs.evolve(_job(), meta={"unique": {"key": KEY}})]) == [holder]

    @pytest.mark.usefixtures("unique_kept")
    def test_queueing_a_job_again_is_idempotent(self, broker: Broker) -> None:
        job = _job()
        assert broker.queue_job_unique(job, KEY) == Queued(job.id, True)
        assert broker.queue_job_unique(job, KEY) == Queued(job.id, True), "its own job holds the key"
        assert broker.queued_job_ids() == [job.id]

    @pytest.mark.usefixtures("unique_kept")
    def test_a_unique_key_must_be_a_valid_one(self, broker: Broker) -> None:
        for bad in ("", "x" * 1001):
            with pytest.raises(ConfigurationError):
                broker.queue_job(_job(), unique=bad)
        with pytest.raises(ConfigurationError):
            broker.queue_job(_job(), unique=Unique(KEY, until="later"))
        with pytest.raises(ConfigurationError):
            broker.queue_job(_job(), unique=Unique(KEY, ttl=0))
        assert broker.queued_job_ids() == []

    # -- until the job ends (the default) -------------------------------------------------

    @pytest.mark.usefixtures("unique_kept")
    def test_until_end_the_key_is_held_while_the_job_runs_and_freed_when_it_finishes(
        self, broker: Broker
    ) -> None:
        first = _job()
        broker.queue_job(first, unique=KEY)
        [taken] = broker.take(manager=MANAGER, worker=WORKER)
        assert broker.queue_job(_job(), unique=KEY) == first.id, "held while it runs"
        broker.take(manager=MANAGER, worker=WORKER, finished=[taken.id], limit=0)
        second = _job()
        assert broker.queue_job(second, unique=KEY) == second.id, "freed when it finished"
        broker.take(manager=MANAGER, worker=WORKER)
        assert broker.finish_with_result(worker=WORKER, job_id=second.id, result="1", ttl=60)
        assert broker.queue_job_unique(_job(), KEY).created, "freed by a finish with a result"

    @pytest.mark.usefixtures("unique_kept")
    def test_until_end_a_delayed_job_holds_its_key(self, broker: Broker) -> None:
        if not broker.capabilities.delayed:
            pytest.skip("the backend does not keep delayed jobs")
        first = _job()
        broker.queue_job(first, unique=KEY, delay=3600)
        assert broker.queue_job(_job(), unique=KEY) == first.id
        assert broker.queue_job(_job(), unique=KEY, delay=5) == first.id
        assert broker.delayed_job_ids() == [first.id]

    @pytest.mark.usefixtures("unique_kept")
    def test_until_end_a_retry_keeps_the_key_and_failing_for_good_frees_it(self, broker: Broker) -> None:
        first = _job()
        broker.queue_job(first, unique=KEY)
        [taken] = broker.take(manager=MANAGER, worker=WORKER)
        assert broker.retry_job(worker=WORKER, job=taken)
        assert broker.queue_job(_job(), unique=KEY) == first.id, "held while it waits to run again"
        [taken] = broker.take(manager=MANAGER, worker=WORKER)
        _fail(broker, taken)
        second = _job()
        assert broker.queue_job(second, unique=KEY) == second.id, "freed when it failed for good"

    @pytest.mark.usefixtures("unique_kept")
    def test_until_end_a_recovered_job_keeps_its_key_until_its_rerun_ends(self, broker: Broker) -> None:
        first = _job()
        broker.queue_job(first, unique=KEY)
        broker.take(manager=MANAGER, worker=WORKER)
        assert broker.queue_job(_job(), unique=KEY) == first.id
        assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 1
        assert broker.queue_job(_job(), unique=KEY) == first.id, "held through its recovery"
        assert broker.queued_job_ids() == [first.id]
        [again] = broker.take(manager=MANAGER, worker=WORKER_2)
        assert again.id == first.id
        assert broker.queue_job(_job(), unique=KEY) == first.id, "held while it runs again"
        assert broker.finish_jobs(worker=WORKER_2, job_ids=[first.id]) == [True]
        assert broker.queue_job_unique(_job(), KEY).created, "freed when the re-run ended"

    @pytest.mark.usefixtures("unique_kept")
    def test_a_released_job_keeps_its_key(self, broker: Broker) -> None:
        first = _job()
        broker.queue_job(first, unique=KEY)
        broker.take(manager=MANAGER, worker=WORKER)
        assert broker.release_jobs(worker=WORKER, job_ids=[first.id]) == 1
        assert broker.queue_job(_job(), unique=KEY) == first.id

    @pytest.mark.usefixtures("unique_kept")
    def test_a_requeued_failed_job_takes_its_key_again_or_stays_failed(self, broker: Broker) -> None:
        first = _job()
        broker.queue_job(first, unique=KEY)
        [taken] = broker.take(manager=MANAGER, worker=WORKER)
        _fail(broker, taken)
        second = _job()
        assert broker.queue_job(second, unique=KEY) == second.id
        assert not broker.requeue_failed(first.id), "another job holds its key"
        assert broker.requeue_all_failed() == 0
        assert broker.get_failed(first.id) is not None, "it stays in the registry"
        broker.take(manager=MANAGER, worker=WORKER)
        broker.finish_jobs(worker=WORKER, job_ids=[second.id])
        assert broker.requeue_failed(first.id)
        assert broker.queue_job(_job(), unique=KEY) == first.id, "the requeued job holds the key"

    @pytest.mark.usefixtures("unique_kept")
    def test_requeue_all_failed_requeues_one_job_per_key(self, broker: Broker) -> None:
        jobs = [_job(n) for n in range(3)]
        for job in jobs:  # each fails while it holds the key: one after the other
            broker.queue_job(job, unique=KEY)
            [taken] = broker.take(manager=MANAGER, worker=WORKER)
            _fail(broker, taken)
        assert broker.requeue_all_failed() == 1
        [queued] = broker.queued_job_ids()
        assert queued in ids(jobs)
        assert broker.failed_count() == 2
        assert broker.queue_job(_job(), unique=KEY) == queued

    # -- until the job starts ---------------------------------------------------------------

    @pytest.mark.usefixtures("unique_kept")
    def test_until_start_a_worker_taking_the_job_frees_the_key(self, broker: Broker) -> None:
        start = Unique(KEY, until="start")
        first = _job()
        broker.queue_job(first, unique=start)
        assert broker.queue_job(_job(), unique=start) == first.id, "held while it waits"
        broker.take(manager=MANAGER, worker=WORKER)
        second = _job()
        assert broker.queue_job(second, unique=start) == second.id, "freed when a worker took it"
        assert broker.queue_job(_job(), unique=start) == second.id
        broker.finish_jobs(worker=WORKER, job_ids=[first.id])
        assert broker.queue_job(_job(), unique=start) == second.id, "the first one's end frees nothing"

    @pytest.mark.usefixtures("unique_kept")
    def test_until_start_a_job_sent_to_a_worker_holds_the_key_until_it_takes_it(self, broker: Broker) -> None:
        start = Unique(KEY, until="start")
        broker.register_manager(MANAGER)
        broker.register_worker(manager=MANAGER, worker=WORKER)
        direct = Job.new({"n": 1}, worker=WORKER, manager=MANAGER)
        broker.queue_job(direct, unique=start)
        assert broker.queue_job(_job(), unique=start) == direct.id, "held while it waits for its worker"
        assert broker.job_status(direct.id).state is State.QUEUED, "not held by the worker until it takes it"
        assert ids(broker.take(manager=MANAGER, worker=WORKER)) == [direct.id]
        assert broker.queue_job_unique(_job(), start).created, "freed when its worker took it"

    # -- for a TTL (throttle) ----------------------------------------------------------------

    @pytest.mark.usefixtures("unique_kept")
    def test_a_throttle_holds_the_key_for_its_ttl_whatever_the_job_does(self, broker: Broker) -> None:
        throttle = Unique(KEY, ttl=0.5)
        first = _job()
        began = time.monotonic()
        broker.queue_job(first, unique=throttle)
        broker.take(manager=MANAGER, worker=WORKER)
        broker.finish_jobs(worker=WORKER, job_ids=[first.id])
        found = broker.queue_job(_job(), unique=throttle)
        if time.monotonic() - began < 0.5:  # a slow machine may be past the TTL already
            assert found == first.id, "held after the job finished, until the TTL runs out"
        deadline = time.monotonic() + 10
        while (queued := broker.queue_job_unique(_job(), throttle)).id == first.id:
            assert time.monotonic() < deadline, "the key was still held 10 s after its TTL of 0.5 s"
            time.sleep(0.02)
        assert queued.created
        assert time.monotonic() - began >= 0.45, "not released before its TTL"
