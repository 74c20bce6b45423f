"""The broker contract, in part: stray queues, which no running manager or worker owns,
and moving their jobs to a queue that is served.

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

import pytest

from qw_core.broker import Broker
from qw_core.errors import WorkerRunning
from qw_core.models import Job
from qw_core.testing import MANAGER, WORKER, drain, ids, make_jobs
from qw_core.testing.contract.base import ContractPart

#: A manager that never runs, and a worker of it.
NOBODY = "nobody"
NOBODYS_WORKER = "nobody.7"


class StrayContract(ContractPart):
    """Stray queues: found, and their jobs moved without loss."""

    def test_jobs_for_a_manager_or_worker_that_is_not_running_are_stray(self, broker: Broker) -> None:
        broker.queue_jobs(make_jobs(2, manager=NOBODY))
        broker.queue_jobs(make_jobs(1, worker=NOBODYS_WORKER))
        broker.queue_jobs(make_jobs(3))  # the shared queue is never stray
        assert broker.stray_queues() == {NOBODY: 2, NOBODYS_WORKER: 1}

    def test_a_running_managers_or_workers_queue_is_not_stray(self, broker: Broker) -> None:
        broker.queue_jobs(make_jobs(2, manager=MANAGER))
        broker.queue_jobs(make_jobs(1, worker=WORKER))
        broker.register_manager(MANAGER)
        broker.register_worker(manager=MANAGER, worker=WORKER)
        assert broker.stray_queues() == {}

    def test_a_beating_worker_is_running_even_if_unregistered(self, broker: Broker) -> None:
        broker.queue_jobs(make_jobs(1, worker=NOBODYS_WORKER))
        broker.beat(manager=NOBODY, token="m", workers={NOBODYS_WORKER: "w"}, ttl=30)
        broker.deregister_worker(manager=NOBODY, worker=NOBODYS_WORKER)
        broker.beat(manager=NOBODY, token="m", workers={NOBODYS_WORKER: "w"}, ttl=30)
        assert NOBODYS_WORKER not in broker.stray_queues()

    def test_moving_a_stray_queue_puts_its_jobs_on_the_shared_queue_in_order(self, broker: Broker) -> None:
        shared = make_jobs(2)
        broker.queue_jobs(shared)
        stray = make_jobs(3, manager=NOBODY)
        broker.queue_jobs(stray)
        assert broker.move_queued(NOBODY) == 3
        assert broker.stray_queues() == {}
        assert broker.queued_job_ids(NOBODY) == []
        taken = drain(broker)
        assert ids(taken) == ids(shared) + ids(stray), "behind the jobs already queued, in their order"
        assert [job.data for job in taken[2:]] == [{"n": 0}, {"n": 1}, {"n": 2}]

    def test_moving_a_gone_workers_list_to_a_manager_queue(self, broker: Broker) -> None:
        sent = make_jobs(2, worker=NOBODYS_WORKER)
        broker.queue_jobs(sent)
        assert broker.move_queued(NOBODYS_WORKER, to=MANAGER) == 2
        assert broker.held_job_ids(NOBODYS_WORKER) == []
        assert sorted(broker.queued_job_ids(MANAGER)) == sorted(ids(sent))
        assert sorted(ids(drain(broker))) == sorted(ids(sent))

    def test_moving_a_running_workers_list_is_refused_and_moves_nothing(self, broker: Broker) -> None:
        job = Job.new({"held": True}, worker=WORKER)
        broker.queue_jobs([job])
        broker.register_manager(MANAGER)
        broker.register_worker(manager=MANAGER, worker=WORKER)
        with pytest.raises(WorkerRunning, match=WORKER):
            broker.move_queued(WORKER)
        assert broker.held_job_ids(WORKER) == [job.id]

    def test_moving_twice_or_an_empty_queue_moves_nothing_more(self, broker: Broker) -> None:
        broker.queue_jobs(make_jobs(1, manager=NOBODY))
        assert broker.move_queued(NOBODY) == 1
        assert broker.move_queued(NOBODY) == 0
        assert broker.move_queued("never-used") == 0
        assert len(broker.queued_job_ids()) == 1

    def test_moving_many_jobs_moves_every_one(self, broker: Broker) -> None:
        jobs = make_jobs(2500, manager=NOBODY)
        broker.queue_jobs(jobs)
        assert broker.move_queued(NOBODY) == 2500
        assert broker.queued_job_ids() == ids(jobs)
