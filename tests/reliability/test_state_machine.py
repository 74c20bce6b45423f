"""A hypothesis state machine over queue / take / finish / fail / retry / release / crash /
reap / recover / revive, on fakeredis (issue 5, test 9).

Workers are names driven through the broker API. A crash makes a worker's heartbeat lapse
(its key is deleted, as expiry would); the process may still come back (revive: it was
only paused) and try to finish, fail or retry what it believed it held, which the guards
must turn into no-ops once a reaper has handed those jobs on. After every step each job
is in exactly one place, and the finished ones are exactly those whose finish succeeded.
"""

from __future__ import annotations

import fakeredis
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from reliability_support import assert_each_job_in_one_place

from qw_core.models import Failure, Job
from qw_redis import RedisBroker

#: worker → its manager
WORKERS = {"m1.1": "m1", "m1.2": "m1", "m2.1": "m2"}
MAX_RECOVERIES = 1
LONG = 3600.0


class Reliability(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
        self.broker = RedisBroker(self.client)
        self.ids: list[str] = []
        self.finished: set[str] = set()
        self.believed: dict[str, list[str]] = {w: [] for w in WORKERS}  # taken, not settled
        self.alive = dict.fromkeys(WORKERS, True)
        self.cut_off = dict.fromkeys(WORKERS, False)  # lapsed since this process started
        self.starts = dict.fromkeys(WORKERS, 0)
        for worker in WORKERS:
            self._start(worker)

    def _start(self, worker: str) -> None:
        self.starts[worker] += 1
        manager = WORKERS[worker]
        token = f"{worker}#{self.starts[worker]}"
        self.broker.beat(manager=manager, token=manager, workers={worker: token}, ttl=LONG)
        self.alive[worker] = True
        self.cut_off[worker] = False

    # -- producing and consuming -------------------------------------------------------

    @rule(count=st.integers(1, 4), manager=st.sampled_from([None, "m1", "m2"]), direct=st.booleans())
    def queue(self, count: int, manager: str | None, direct: bool) -> None:
        worker = "m1.1" if direct else None
        jobs = [Job.new({"n": len(self.ids) + n}, manager=manager, worker=worker) for n in range(count)]
        self.broker.queue_jobs(jobs)
        self.ids += [job.id for job in jobs]

    @rule(worker=st.sampled_from(list(WORKERS)), limit=st.integers(1, 3))
    def take(self, worker: str, limit: int) -> None:
        held = self.believed[worker]
        jobs = self.broker.take(manager=WORKERS[worker], worker=worker, held=held, limit=limit)
        if not self.cut_off[worker]:  # (a reaped worker may get back what it believes it holds)
            assert not {job.id for job in jobs} & set(held), "a held job was handed out again"
        held += [job.id for job in jobs if job.id not in held]

    def _pick(self, worker: str, index: int) -> str | None:
        held = self.believed[worker]
        return held.pop(index % len(held)) if held else None

    @rule(worker=st.sampled_from(list(WORKERS)), index=st.integers(0, 10))
    def finish(self, worker: str, index: int) -> None:
        job_id = self._pick(worker, index)
        if job_id is None:
            return
        if self.broker.finish_jobs(worker=worker, job_ids=[job_id]) == [True]:
            assert job_id not in self.finished, "finished twice"
            self.finished.add(job_id)
        else:
            event("a late finish changed nothing")

    @rule(worker=st.sampled_from(list(WORKERS)), index=st.integers(0, 10))
    def fail(self, worker: str, index: int) -> None:
        job_id = self._pick(worker, index)
        if job_id is not None:
            job = self.broker.get_job(job_id)
            failure = Failure(exc_type="builtins.ValueError", message="no", worker=worker)
            self.broker.fail_job(worker=worker, job=job or Job(id=job_id), failure=failure)

    @rule(worker=st.sampled_from(list(WORKERS)), index=st.integers(0, 10))
    def retry(self, worker: str, index: int) -> None:
        job_id = self._pick(worker, index)
        job = None if job_id is None else self.broker.get_job(job_id)
        if job is not None:
            self.broker.retry_job(worker=worker, job=job)

    @rule(worker=st.sampled_from(list(WORKERS)))
    def release(self, worker: str) -> None:
        self.broker.release_jobs(worker=worker, job_ids=self.believed[worker])
        self.believed[worker] = []

    # -- faults and recovery -----------------------------------------------------------

    @precondition(lambda self: any(self.alive.values()))
    @rule(worker=st.sampled_from(list(WORKERS)))
    def crash(self, worker: str) -> None:
        """The worker stops beating (dead, or paused past its TTL): its heartbeat lapses."""
        self.alive[worker] = False
        self.cut_off[worker] = True
        self.client.delete(f"qw:hb:{worker}")

    @rule()
    def reap(self) -> None:
        reaped = self.broker.reap(owner="reaper", lease=0, ttl=LONG, max_recoveries=MAX_RECOVERIES)
        assert reaped is not None
        if any(r.requeued for r in reaped):
            event("the reaper put jobs back")
        if any(r.failed for r in reaped):
            event("the reaper failed a poison job")
        assert {r.worker for r in reaped} <= {w for w, alive in self.alive.items() if not alive}

    @rule(worker=st.sampled_from(list(WORKERS)))
    def recover(self, worker: str) -> None:
        """Its manager saw the process exit: recover it, and start a new one of that name."""
        self.broker.recover_worker(manager=WORKERS[worker], worker=worker, max_recoveries=MAX_RECOVERIES)
        self.believed[worker] = []
        self._start(worker)

    @precondition(lambda self: not all(self.alive.values()))
    @rule(worker=st.sampled_from(list(WORKERS)))
    def revive(self, worker: str) -> None:
        """A paused worker comes back, still believing it holds what it held."""
        if not self.alive[worker]:
            self.broker.beat(
                manager=WORKERS[worker],
                token=WORKERS[worker],
                workers={worker: f"{worker}#{self.starts[worker]}"},
                ttl=LONG,
            )
            self.alive[worker] = True

    # -- the invariant -----------------------------------------------------------------

    @invariant()
    def each_job_is_in_exactly_one_place(self) -> None:
        where = assert_each_job_in_one_place(self.client, self.ids)
        assert {job_id for job_id, place in where.items() if place == "finished"} == self.finished


@pytest.mark.slow
def test_9_state_machine() -> None:
    machine_settings = settings(
        max_examples=100,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    Reliability.TestCase.settings = machine_settings
    Reliability.TestCase().runTest()
