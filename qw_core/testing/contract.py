"""The broker contract as pytest tests: every backend runs the same suite.

A backend's test module subclasses :class:`BrokerContract` and defines one fixture,
``broker``, that yields a fresh, empty broker (and closes it afterwards)::

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        def broker(self) -> Iterator[Broker]:
            broker = MyBroker.from_url(...)
            yield broker
            broker.close()

After fsspec's abstract filesystem tests. Each test states one sentence of the contract
in :mod:`qw_core.broker`; timing tests use short delays and poll with a deadline, and a
second broker for another thread always comes from ``broker.factory()()``, since a broker
object serves one thread. Names follow the ``<manager>.<pid>`` convention, so a backend
may derive a worker's manager from its name.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import pytest

from qw_core.broker import Broker, Capabilities
from qw_core.errors import ConfigurationError, InvalidJob, InvalidName
from qw_core.models import JSON, Failure, Job
from qw_core.policy import FailedLimits
from qw_core.testing import (
    MANAGER,
    OTHER_MANAGER,
    OTHER_WORKER,
    WORKER,
    WORKER_2,
    drain,
    ids,
    make_jobs,
    opened,
    poll_take,
    take_while_blocked,
    wait_reaped,
)

#: Values whose JSON round trip must be exact, as job data.
ROUND_TRIP_VALUES: list[JSON] = [
    {},
    {"n": "7"},
    {"nested": {"list": [1, 2.5, "three", None, True, False], "deeper": {"x": {"y": []}}}},
    {"unicode": "ünïcödé ✓ 日本語 \U0001f600", "escapes": 'quote " back \\ nl \n tab \t nul \x00'},
    {"int": 2**62, "negative": -17, "zero": 0, "float": 0.1, "exp": 1e-300, "big": 1.7976931348623157e308},
    {"bools": [True, False], "none": None, "empty": {"list": [], "dict": {}, "str": ""}},
    [1, "two", {"three": 3}],
    [],
    "a top-level string",
    "",
    42,
    -0.5,
    True,
    None,
]

#: Job data no backend may accept: not JSON, or not representable exactly.
INVALID_VALUES: list[Any] = [
    {"a set": {1, 2}},
    {"nan": float("nan")},
    {"infinity": float("inf")},
    {"bytes": b"raw"},
    {"object": object()},
    {1: "an integer key"},
    {1, 2, 3},
]

INVALID_NAMES = ["", "a:b", "has space", "tab\there", "new\nline", "all", "job", "qw", "x" * 201]
VALID_NAMES = ["m1", "host.example.com", "m1.12345", "web-01_a", "all.1", "jobs", "x" * 200]


class BrokerContract:
    """The contract of :class:`~qw_core.broker.Broker`, run against the ``broker`` fixture."""

    @pytest.fixture
    def broker(self) -> Broker:
        """A fresh, empty broker: every subclass defines this."""
        pytest.fail(f"{type(self).__name__} must define a `broker` fixture")

    # -- the basics ----------------------------------------------------------------

    def test_capabilities_are_declared(self, broker: Broker) -> None:
        assert isinstance(broker.capabilities, Capabilities)
        assert broker.capabilities.max_take >= 1
        assert isinstance(broker.describe(), str)

    def test_take_from_an_empty_broker_returns_nothing_at_once(self, broker: Broker) -> None:
        started = time.monotonic()
        assert broker.take(manager=MANAGER, worker=WORKER) == []
        assert broker.take(manager=MANAGER, worker=WORKER, timeout=0) == []
        assert time.monotonic() - started < 0.2
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
        taken, waited = take_while_blocked(broker, lambda: broker.queue_job(job))
        assert taken == [job]
        assert waited < 1.0

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
        taken, waited = take_while_blocked(broker, act, worker=WORKER_2)
        assert ids(taken) == [job.id]
        assert waited < 1.5

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

    # -- failing, retrying, releasing ------------------------------------------------

    def test_fail_job_moves_it_to_the_failed_registry(self, broker: Broker) -> None:
        job = Job.new({"n": 1}, manager=MANAGER)
        broker.queue_job(job)
        broker.take(manager=MANAGER, worker=WORKER)
        failure = Failure(exc_type="builtins.ValueError", message="bad", traceback="tb", worker=WORKER)
        assert broker.fail_job(worker=WORKER, job=job, failure=failure)
        [failed] = broker.failed_jobs()
        assert failed.job == job
        assert failed.failure == failure
        assert broker.held_job_ids(WORKER) == []
        assert broker.queued_job_ids(MANAGER) == []
        assert broker.get_job(job.id) == job
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
            broker, lambda: broker.retry_job(worker=WORKER, job=job, delay=0.3), worker=WORKER_2
        )
        assert ids(taken) == [job.id]
        assert waited < 2.0

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
        assert sorted(broker.queued_job_ids(MANAGER)) == sorted([mine.id, direct.id])
        assert broker.workers(MANAGER) == [WORKER_2]
        assert broker.get_job(direct.id) == direct

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

    # -- data ------------------------------------------------------------------------

    @pytest.mark.parametrize("data", ROUND_TRIP_VALUES, ids=repr)
    def test_job_data_round_trips_exactly(self, broker: Broker, data: JSON) -> None:
        job = Job.new(data, meta={"echo": data})
        broker.queue_job(job)
        [taken] = broker.take(manager=MANAGER, worker=WORKER)
        assert taken == job
        assert type(taken.data) is type(data)
        assert repr(taken.data) == repr(data)  # 1 == 1.0 == True; repr tells them apart

    def test_stored_data_is_not_shared_with_the_caller(self, broker: Broker) -> None:
        data: dict[str, JSON] = {"list": [1]}
        job = Job.new(data)
        broker.queue_job(job)
        data["list"] = [2]
        [taken] = broker.take(manager=MANAGER, worker=WORKER)
        assert taken.data == {"list": [1]}
        assert isinstance(taken.data, dict)
        taken.data["list"] = [3]
        assert broker.get_job(job.id) == attrs.evolve(job, data={"list": [1]})

    @pytest.mark.parametrize("data", INVALID_VALUES, ids=repr)
    def test_invalid_data_is_refused_and_nothing_is_written(self, broker: Broker, data: Any) -> None:
        valid = Job.new({"fine": True})
        invalid = Job.new(data)
        with pytest.raises(InvalidJob):
            broker.queue_jobs([valid, invalid])
        assert broker.get_job(valid.id) is None
        assert broker.get_job(invalid.id) is None
        assert broker.queued_job_ids() == []

    def test_invalid_meta_is_refused(self, broker: Broker) -> None:
        with pytest.raises(InvalidJob):
            broker.queue_job(Job.new({}, meta={"nan": float("nan")}))
        assert broker.queued_job_ids() == []

    # -- names -----------------------------------------------------------------------

    @pytest.mark.parametrize("name", INVALID_NAMES, ids=repr)
    def test_invalid_names_are_refused(self, broker: Broker, name: str) -> None:
        with pytest.raises(InvalidName) as caught:
            broker.check_name(name)
        assert "\n" not in str(caught.value)
        with pytest.raises(InvalidName):
            broker.register_manager(name)
        assert broker.managers() == []

    @pytest.mark.parametrize("name", VALID_NAMES, ids=lambda name: name[:20])
    def test_valid_names_are_accepted(self, broker: Broker, name: str) -> None:
        assert broker.check_name(name) == name

    @pytest.mark.parametrize("field", ["manager", "worker"])
    def test_queue_with_an_invalid_name_writes_nothing(self, broker: Broker, field: str) -> None:
        valid = Job.new({"fine": True})
        invalid = Job.new({}, manager="bad name") if field == "manager" else Job.new({}, worker="bad name")
        with pytest.raises(InvalidName):
            broker.queue_jobs([valid, invalid])
        assert broker.get_job(valid.id) is None
        assert broker.queued_job_ids() == []

    # -- concurrency -----------------------------------------------------------------

    def test_concurrent_workers_take_each_job_exactly_once(self, broker: Broker) -> None:
        jobs = make_jobs(1000)
        broker.queue_jobs(jobs)
        factory = broker.factory()

        def work(worker: str) -> list[str]:
            with opened(factory) as mine:
                return ids(drain(mine, worker=worker, limit=10))

        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(work, [WORKER, WORKER_2])
        assert len(first) + len(second) == len(jobs)
        assert sorted(first + second) == sorted(ids(jobs))
        assert broker.queued_job_ids() == []
        assert broker.held_job_ids(WORKER) == broker.held_job_ids(WORKER_2) == []
        assert all(broker.get_job(job.id) is None for job in jobs[::50])

    # -- delayed jobs ----------------------------------------------------------------

    @staticmethod
    def _needs_delays(broker: Broker) -> None:
        if not broker.capabilities.delayed:
            pytest.skip("the backend does not keep delayed jobs (capabilities.delayed is false)")

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
        taken, waited = take_while_blocked(broker, lambda: broker.queue_jobs([job], delay=0.3))
        assert taken == [job]
        assert 0.25 <= waited < 1.3

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
        self, broker: Broker, jobs: list[Job], limits: FailedLimits | None = None, **when: float
    ) -> None:
        broker.queue_jobs(jobs)
        broker.take(manager=MANAGER, worker=WORKER, limit=len(jobs))
        for n, job in enumerate(jobs):
            failed_at = when.get("failed_at", time.time()) + n * 0.001
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
        assert found.job == jobs[1]
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
        self._fail(broker, [old], failed_at=time.time() - 100)
        self._fail(broker, [new], FailedLimits(max_count=None, max_age=50))
        assert [f.job.id for f in broker.failed_jobs()] == [new.id]
        assert broker.get_job(old.id) is None

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

    # -- liveness: heartbeats, the reaper, poison jobs ---------------------------------

    def test_beat_registers_and_reports_heartbeats_that_were_not_its_own(self, broker: Broker) -> None:
        first = broker.beat(manager=MANAGER, token="m-1", workers={WORKER: "w-1"}, ttl=30)
        assert first == {MANAGER: None, WORKER: None}
        assert broker.managers() == [MANAGER]
        assert broker.workers(MANAGER) == [WORKER]
        assert broker.beat(manager=MANAGER, token="m-1", workers={WORKER: "w-1"}, ttl=30) == {}
        assert broker.beat(manager=MANAGER, token="m-1", workers={WORKER: "w-2"}, ttl=30) == {WORKER: "w-1"}

    def test_deregistering_deletes_the_heartbeat(self, broker: Broker) -> None:
        broker.beat(manager=MANAGER, token="m-1", workers={WORKER: "w-1"}, ttl=30)
        broker.deregister_worker(manager=MANAGER, worker=WORKER)
        broker.deregister_manager(MANAGER)
        again = broker.beat(manager=MANAGER, token="m-1", workers={WORKER: "w-1"}, ttl=30)
        assert again == {MANAGER: None, WORKER: None}

    def test_reap_recovers_only_workers_whose_heartbeat_lapsed(self, broker: Broker) -> None:
        ttl = 0.3
        jobs = make_jobs(3)
        broker.queue_jobs(jobs)
        broker.beat(manager=MANAGER, token="m", workers={WORKER: "a", WORKER_2: "b"}, ttl=ttl)
        dead = broker.take(manager=MANAGER, worker=WORKER, limit=2)
        alive = broker.take(manager=MANAGER, worker=WORKER_2)
        assert broker.reap(owner="test", lease=0, ttl=ttl) == []
        broker.beat(manager=MANAGER, token="m", workers={WORKER_2: "b"}, ttl=30)  # WORKER stops beating
        [reaped] = wait_reaped(broker, WORKER, ttl=ttl)
        assert (reaped.manager, reaped.requeued, reaped.failed) == (MANAGER, 2, 0)
        assert broker.queued_job_ids() == ids(dead)
        assert broker.held_job_ids(WORKER) == []
        assert broker.held_job_ids(WORKER_2) == ids(alive)
        assert broker.workers(MANAGER) == [WORKER_2]
        assert broker.managers() == [MANAGER]

    def test_a_reaped_worker_that_beats_again_is_registered_again(self, broker: Broker) -> None:
        ttl = 0.2
        broker.beat(manager=MANAGER, token="m", workers={WORKER: "a"}, ttl=ttl)
        broker.beat(manager=MANAGER, token="m", workers={}, ttl=30)
        wait_reaped(broker, WORKER, ttl=ttl)
        assert broker.workers(MANAGER) == []
        assert broker.beat(manager=MANAGER, token="m", workers={WORKER: "a"}, ttl=30) == {WORKER: None}
        assert broker.workers(MANAGER) == [WORKER]

    def test_reap_forgets_a_dead_manager_after_its_workers(self, broker: Broker) -> None:
        ttl = 0.2
        broker.queue_jobs(make_jobs(1))
        broker.beat(manager=MANAGER, token="m", workers={WORKER: "a"}, ttl=ttl)
        [job] = broker.take(manager=MANAGER, worker=WORKER)
        wait_reaped(broker, WORKER, ttl=ttl)
        deadline = time.monotonic() + 5
        while broker.managers() and time.monotonic() < deadline:
            broker.reap(owner="test", lease=0, ttl=ttl)
        assert broker.managers() == []
        assert broker.queued_job_ids() == [job.id]

    def test_reap_never_touches_managers_that_do_not_beat(self, broker: Broker) -> None:
        broker.queue_jobs(make_jobs(1))
        broker.register_manager(MANAGER)
        broker.register_worker(manager=MANAGER, worker=WORKER)
        [job] = broker.take(manager=MANAGER, worker=WORKER)
        assert broker.reap(owner="test", lease=0, ttl=0.1) == []
        assert broker.held_job_ids(WORKER) == [job.id]
        assert broker.workers(MANAGER) == [WORKER]

    def test_reap_is_throttled_by_a_lease(self, broker: Broker) -> None:
        assert broker.reap(owner="one", lease=30, ttl=0.1) == []
        assert broker.reap(owner="two", lease=30, ttl=0.1) is None
        assert broker.reap(owner="three", lease=0, ttl=0.1) == []

    def test_a_job_recovered_too_often_is_failed_as_crashed(self, broker: Broker) -> None:
        job = Job.new({"poison": True})
        broker.queue_jobs([job])
        for _ in range(2):
            broker.take(manager=MANAGER, worker=WORKER)
            assert broker.recover_worker(manager=MANAGER, worker=WORKER, max_recoveries=2) == 1
        broker.take(manager=MANAGER, worker=WORKER)
        assert broker.recover_worker(manager=MANAGER, worker=WORKER, max_recoveries=2) == 0
        assert broker.queued_job_ids() == []
        assert broker.held_job_ids(WORKER) == []
        [failed] = broker.failed_jobs()
        assert failed.job.id == job.id
        assert failed.job.data == {"poison": True}
        assert failed.failure.kind == "crashed"
        assert failed.failure.worker == WORKER
        assert broker.requeue_failed(job.id)
        assert broker.queued_job_ids() == [job.id]

    def test_recoveries_are_counted_only_when_asked_and_cleared_by_finishing(self, broker: Broker) -> None:
        job = Job.new({"n": 1})
        broker.queue_jobs([job])
        for _ in range(3):  # a stop on purpose, not a crash: nothing counted
            broker.take(manager=MANAGER, worker=WORKER)
            assert broker.recover_worker(manager=MANAGER, worker=WORKER) == 1
        broker.take(manager=MANAGER, worker=WORKER)
        assert broker.recover_worker(manager=MANAGER, worker=WORKER, max_recoveries=1) == 1
        assert broker.take(manager=MANAGER, worker=WORKER) == [job]
        assert broker.finish_jobs(worker=WORKER, job_ids=[job.id]) == [True]
        broker.queue_jobs([job])  # the same id again: its old count is gone
        broker.take(manager=MANAGER, worker=WORKER)
        assert broker.recover_worker(manager=MANAGER, worker=WORKER, max_recoveries=1) == 1
        assert broker.failed_jobs() == []

    def test_reap_fails_poison_jobs_too(self, broker: Broker) -> None:
        ttl = 0.2
        job = Job.new({"n": 1})
        broker.queue_jobs([job])
        broker.take(manager=MANAGER, worker=WORKER)
        broker.recover_worker(manager=MANAGER, worker=WORKER, max_recoveries=1)
        broker.beat(manager=MANAGER, token="m", workers={WORKER: "a"}, ttl=ttl)
        broker.take(manager=MANAGER, worker=WORKER)
        broker.beat(manager=MANAGER, token="m", workers={}, ttl=30)
        deadline = time.monotonic() + 5
        reaped: list[Any] = []
        while not reaped and time.monotonic() < deadline:
            reaped = broker.reap(owner="test", lease=0, ttl=ttl, max_recoveries=1) or []
        assert [(r.worker, r.requeued, r.failed) for r in reaped] == [(WORKER, 0, 1)]
        assert [f.job.id for f in broker.failed_jobs()] == [job.id]
