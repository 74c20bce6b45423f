"""The broker contract, in part: heartbeats, the reaper and poison jobs.

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

import time
from typing import Any

from qw_core.broker import Broker
from qw_core.models import Failure, Job
from qw_core.policy import FailedLimits
from qw_core.testing import (
    MANAGER,
    WORKER,
    WORKER_2,
    ids,
    make_jobs,
    wait_reaped,
)
from qw_core.testing.contract.base import ContractPart


class LivenessContract(ContractPart):
    """Heartbeats, the reaper and poison jobs."""

    # -- liveness: heartbeats, the reaper, poison jobs ---------------------------------

    def test_beat_registers_and_reports_heartbeats_that_were_not_its_own(self, broker: Broker) -> None:
        first = broker.beat(manager=MANAGER, token="m-1", workers={WORKER: "w-1"}, ttl=30)
        assert first == {MANAGER: None, WORKER: None}
        assert broker.managers() == [MANAGER]
        assert broker.workers(MANAGER) == [WORKER]
        assert broker.beat(manager=MANAGER, token="m-1", workers={WORKER: "w-1"}, ttl=30) == {}
        assert broker.beat(manager=MANAGER, token="m-1", workers={WORKER: "w-2"}, ttl=30) == {WORKER: "w-1"}

    def test_heartbeat_of_tells_the_token_and_the_time_left(self, broker: Broker) -> None:
        assert broker.heartbeat_of(MANAGER) is None
        broker.beat(manager=MANAGER, token="m-1@host:1:2", workers={WORKER: "w-1"}, ttl=30)
        token, left = broker.heartbeat_of(MANAGER) or ("", 0.0)
        assert token == "m-1@host:1:2"
        assert 25 < left <= 30
        worker = broker.heartbeat_of(WORKER)
        assert worker is not None
        assert worker[0] == "w-1"
        broker.deregister_manager(MANAGER)
        assert broker.heartbeat_of(MANAGER) is None

    def test_a_lapsed_heartbeat_has_no_holder(self, broker: Broker) -> None:
        broker.beat(manager=MANAGER, token="m-1", workers={}, ttl=0.05)
        deadline = time.monotonic() + 5
        while broker.heartbeat_of(MANAGER) is not None:
            assert time.monotonic() < deadline, "the heartbeat never lapsed"
            time.sleep(0.01)

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
        broker.beat(manager=MANAGER, token="m", workers={WORKER: "a", WORKER_2: "b"}, ttl=30)
        dead = broker.take(manager=MANAGER, worker=WORKER, limit=2)
        alive = broker.take(manager=MANAGER, worker=WORKER_2)
        assert not broker.reap(owner="test", lease=0, ttl=ttl), "both beat: nobody reaped"
        broker.beat(manager=MANAGER, token="m", workers={WORKER: "a"}, ttl=ttl)  # WORKER's last beat
        broker.beat(manager=MANAGER, token="m", workers={WORKER_2: "b"}, ttl=30)
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
        assert broker.reap(owner="test", lease=0, ttl=0) == []
        assert broker.held_job_ids(WORKER) == [job.id]
        assert broker.workers(MANAGER) == [WORKER]

    def test_reap_is_throttled_by_a_lease(self, broker: Broker) -> None:
        # (ttl=0: a server that restarted a moment ago must not make the first reap skip.)
        assert broker.reap(owner="one", lease=30, ttl=0) == []
        assert broker.reap(owner="two", lease=30, ttl=0) is None
        assert broker.reap(owner="three", lease=0, ttl=0) == []

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

    def _fail_two(self, broker: Broker, limits: FailedLimits) -> list[str]:
        """Two jobs in the failed registry, which ``limits`` lets hold two."""
        jobs = make_jobs(2)
        broker.queue_jobs(jobs)
        for job in broker.take(manager=MANAGER, worker=WORKER_2, limit=2):
            failure = Failure(exc_type="ValueError", message="no", worker=WORKER_2)
            assert broker.fail_job(worker=WORKER_2, job=job, failure=failure, limits=limits)
        assert broker.failed_count() == 2
        return ids(jobs)

    def test_a_poison_job_keeps_the_failed_registrys_bounds(self, broker: Broker) -> None:
        limits = FailedLimits(max_count=2)  # the defaults would keep three
        _oldest, second = self._fail_two(broker, limits)  # the oldest goes
        poison = Job.new({"poison": True})
        broker.queue_jobs([poison])
        broker.take(manager=MANAGER, worker=WORKER)
        assert broker.recover_worker(manager=MANAGER, worker=WORKER, max_recoveries=0, limits=limits) == 0
        assert sorted(f.job.id for f in broker.failed_jobs()) == sorted([second, poison.id])

    def test_a_reaped_poison_job_keeps_the_failed_registrys_bounds(self, broker: Broker) -> None:
        ttl = 0.2
        limits = FailedLimits(max_count=2)
        _oldest, second = self._fail_two(broker, limits)  # the oldest goes
        poison = Job.new({"poison": True})
        broker.queue_jobs([poison])
        broker.beat(manager=MANAGER, token="m", workers={WORKER: "a"}, ttl=ttl)
        broker.take(manager=MANAGER, worker=WORKER)
        broker.beat(manager=MANAGER, token="m", workers={}, ttl=30)
        [reaped] = wait_reaped(broker, WORKER, ttl=ttl, max_recoveries=0, limits=limits)
        assert reaped.failed == 1
        assert sorted(f.job.id for f in broker.failed_jobs()) == sorted([second, poison.id])

    def test_only_the_job_the_worker_died_running_is_counted(self, broker: Broker) -> None:
        a, b, c = (Job.new({"n": n}) for n in range(3))
        broker.queue_jobs([a, b, c])

        def crash_running(job: Job) -> int:
            assert len(broker.take(manager=MANAGER, worker=WORKER, limit=3)) == 3
            return broker.recover_worker(manager=MANAGER, worker=WORKER, max_recoveries=1, crashed_job=job.id)

        assert crash_running(b) == 3
        assert crash_running(a) == 3, "a was not counted when b crashed, or it would be poison now"
        assert crash_running(b) == 2, "b crashed twice: past the limit"
        assert broker.queued_job_ids() == [a.id, c.id], "the others back in line, in order"
        assert [failed.job.id for failed in broker.failed_jobs()] == [b.id]

    def test_suspects_are_put_back_uncounted_and_stay_suspects_until_they_end(self, broker: Broker) -> None:
        a, b, c = (Job.new({"n": n}) for n in range(3))
        broker.queue_jobs([a, b, c])
        assert len(broker.take(manager=MANAGER, worker=WORKER, limit=3)) == 3
        recovered = broker.recover_worker(manager=MANAGER, worker=WORKER, suspects=[a.id, b.id])
        assert recovered == 3
        taken = broker.take(manager=MANAGER, worker=WORKER_2, limit=3)
        assert ids(taken) == [a.id, b.id, c.id], "back in line, in order"
        assert [job.suspect for job in taken] == [True, True, False]
        assert taken == [a, b, c], "a suspect is the same job"
        broker.release_jobs(worker=WORKER_2, job_ids=[a.id, b.id, c.id])  # given back unrun
        again = broker.take(manager=MANAGER, worker=WORKER, limit=3)
        assert [job.suspect for job in again] == [True, True, False], "still suspects: they never ran"
        assert broker.finish_jobs(worker=WORKER, job_ids=[a.id]) == [True]
        broker.retry_job(worker=WORKER, job=b)
        broker.queue_jobs([a])  # the same id again, a new job: no mark
        taken = broker.take(manager=MANAGER, worker=WORKER_2, limit=3)
        assert sorted(ids(taken)) == sorted([a.id, b.id])
        assert not any(job.suspect for job in taken), "a job that ended (or ran and raised) is no suspect"
        assert broker.failed_jobs() == [], "nothing was counted"

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
