"""The memory backend: the contract suite directly and through its cross-process client."""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections.abc import Iterator

import attrs
import pytest

from qw_core.broker import Broker
from qw_core.errors import BackendError, BrokerUnavailable, ConfigurationError, InvalidJob
from qw_core.memory import MemoryBroker
from qw_core.memory_rpc import MemoryClient, MemoryFactory
from qw_core.models import Failure, Job
from qw_core.testing import (
    MANAGER,
    WORKER,
    WORKER_2,
    BrokerContract,
    make_jobs,
    opened,
)
from qw_core.testing.contract.inspecting import InspectingContract


@pytest.fixture
def memory() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


class TestMemoryContract(BrokerContract):
    broker_class = MemoryBroker

    @pytest.fixture
    def broker(self, memory: MemoryBroker) -> MemoryBroker:
        self._memory = memory
        return memory

    def blocked_takers(self, broker: Broker) -> int:
        return self._memory.blocked_takes


class TestMemoryClientContract(BrokerContract):
    broker_class = MemoryBroker  # its clients declare what it does

    @pytest.fixture
    def broker(self, memory: MemoryBroker) -> Iterator[Broker]:
        self._memory = memory  # the server side, where a client's blocked take waits
        with opened(memory.factory()) as client:
            yield client

    def blocked_takers(self, broker: Broker) -> int:
        return self._memory.blocked_takes


class _Defaults(MemoryBroker):
    """The memory broker with the dashboard's reads left to :class:`Broker`'s defaults,
    which read through the rest of the interface (a backend that overrides none of them)."""

    capabilities = attrs.evolve(MemoryBroker.capabilities, throughput=False)
    failed_jobs_page = Broker.failed_jobs_page
    running_jobs = Broker.running_jobs
    note_jobs_run = Broker.note_jobs_run
    jobs_run = Broker.jobs_run


class TestDefaultsContract(InspectingContract):
    """The defaults of the dashboard's reads keep the contract (the other parts are the
    memory broker's own, tested above)."""

    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        broker = _Defaults()
        yield broker
        broker.close()


# -- in a child process ---------------------------------------------------------------------


def _child(factory: MemoryFactory) -> None:
    """Take the parent's job, finish it, and queue one that says what it saw."""
    with opened(factory) as broker:
        [job] = broker.take(manager=MANAGER, worker="m1.child", timeout=10)
        broker.take(manager=MANAGER, worker="m1.child", finished=[job.id], limit=0)
        broker.queue_job(Job.new({"seen": job.data}))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_child_process_queues_and_takes_through_the_factory(memory: MemoryBroker, method: str) -> None:
    sent = Job.new({"from": "parent", "list": [1, 2.5]})
    memory.queue_job(sent)
    child = multiprocessing.get_context(method).Process(target=_child, args=(memory.factory(),))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert memory.get_job(sent.id) is None
    [reply] = memory.take(manager=MANAGER, worker=WORKER)
    assert reply.data == {"seen": sent.data}


# -- what the contract leaves to the backend -----------------------------------------------


def test_from_url_accepts_only_memory() -> None:
    assert isinstance(MemoryBroker.from_url(None), MemoryBroker)
    assert isinstance(MemoryBroker.from_url("memory://"), MemoryBroker)
    with pytest.raises(ConfigurationError):
        MemoryBroker.from_url("redis://localhost:6379/0")
    with pytest.raises(ConfigurationError):
        MemoryClient.from_url("memory://")


def test_capabilities() -> None:
    assert (MemoryBroker.capabilities.multi_host, MemoryBroker.capabilities.delayed) == (False, True)
    assert MemoryClient.capabilities == MemoryBroker.capabilities


def test_factory_is_picklable_and_shared(memory: MemoryBroker) -> None:
    factory = memory.factory()
    assert memory.factory() == factory
    copy = pickle.loads(pickle.dumps(factory))
    job = Job.new({"n": 1})
    with opened(copy) as client:
        assert client.factory() == factory
        client.queue_job(job)
    assert memory.queued_job_ids() == [job.id]
    assert "authkey" not in repr(factory)


def test_a_wrong_key_is_refused(memory: MemoryBroker) -> None:
    factory = memory.factory()
    with pytest.raises(BrokerUnavailable):
        attrs.evolve(factory, authkey=b"not the key")()


def test_closing_the_broker_cuts_clients_off(memory: MemoryBroker) -> None:
    client = memory.factory()()
    assert client.managers() == []
    memory.close()
    with pytest.raises(BrokerUnavailable):
        client.managers()
    client.close()


def test_unexpected_server_errors_arrive_as_backend_errors(memory: MemoryBroker) -> None:
    with opened(memory.factory()) as client:
        with pytest.raises(BackendError):
            client.failed_jobs(limit="ten")  # type: ignore[arg-type]
        assert client.managers() == []  # the connection survives


def test_a_blocked_take_waits_its_full_timeout(memory: MemoryBroker) -> None:
    started = time.monotonic()
    assert memory.take(manager=MANAGER, worker=WORKER, timeout=0.3) == []
    assert time.monotonic() - started >= 0.3


def test_recovered_jobs_go_to_the_front_in_order(memory: MemoryBroker) -> None:
    held, waiting = make_jobs(2), make_jobs(2)
    memory.queue_jobs(held)
    memory.take(manager=MANAGER, worker=WORKER, limit=2)
    memory.queue_jobs(waiting)
    memory.recover_worker(manager=MANAGER, worker=WORKER)
    assert memory.queued_job_ids() == [job.id for job in held + waiting]


def test_retried_direct_job_goes_to_its_workers_manager(memory: MemoryBroker) -> None:
    job = Job.new({"n": 1}, worker=WORKER)
    memory.queue_job(job)
    memory.take(manager=MANAGER, worker=WORKER)
    assert memory.retry_job(worker=WORKER, job=job)
    assert memory.queued_job_ids(MANAGER) == [job.id]


def test_a_failed_id_queued_again_is_a_new_job_beside_its_failed_entry(memory: MemoryBroker) -> None:
    job = Job.new({"n": 1})
    memory.queue_job(job)
    memory.take(manager=MANAGER, worker=WORKER)
    memory.fail_job(worker=WORKER, job=job, failure=Failure(exc_type="E", message="m"))
    again = attrs.evolve(job, data={"n": 2})
    memory.queue_job(again)
    assert memory.take(manager=MANAGER, worker=WORKER) == [again]
    failed = memory.get_failed(job.id)
    assert failed is not None
    assert failed.job == attrs.evolve(job, attempts=1)


def test_tuples_are_refused(memory: MemoryBroker) -> None:
    with pytest.raises(InvalidJob):
        memory.queue_job(Job.new({"t": (1, 2)}))  # type: ignore[dict-item]


def test_memory_broker_is_importable_from_testing() -> None:
    from qw_core import testing

    assert testing.MemoryBroker is MemoryBroker
    assert testing.WORKER_2 == WORKER_2


def test_a_job_built_for_the_default_queue_goes_to_the_shared_queue() -> None:
    # Job(queue="default") by hand, as Job.new(queue="default") does: the shared queue
    # (the one `qw run --queue default` serves), not a named queue called "default".
    job = Job(data={"n": 1}, queue="default")
    assert job.queue is None
    assert job == Job(id=job.id, data={"n": 1})
    broker = MemoryBroker()
    broker.queue_job(job)
    assert broker.queued_job_ids() == [job.id]
    [taken] = broker.take(manager="m1", worker="m1.1", queues=["default"])
    assert taken.id == job.id


def test_a_contract_class_naming_its_broker_does_not_collect_the_parts_it_lacks() -> None:
    from qw_core.testing.contract.sessions import SessionContract

    session_tests = [name for name in vars(SessionContract) if name.startswith("test_")]
    assert session_tests, "the session part has tests"
    assert not MemoryBroker.capabilities.session_liveness
    for name in session_tests:
        assert getattr(TestMemoryContract, name) is None, f"{name} is collected for a broker without sessions"
        assert callable(getattr(BrokerContract, name)), "the contract itself keeps it"

    class WithSessions(MemoryBroker):
        capabilities = attrs.evolve(MemoryBroker.capabilities, session_liveness=True)

    class TestWithSessions(BrokerContract):
        broker_class = WithSessions

    assert all(callable(getattr(TestWithSessions, name)) for name in session_tests)
