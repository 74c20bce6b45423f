"""Jobs that attack the worker's concurrency layer (qw_core.execution, qw_core.worker) with
what their data or code may do, and what the worker must still guarantee: each job ends
once, its code runs once, and the worker goes on.

* A time limit that JSON can carry but a float cannot (a whole number of 400 digits): the
  loop of a worker on threads read it before the job started, outside any guard, and died
  of its ``OverflowError``; restarted, it took the job again and died again. On an event
  loop or alone, the job failed with that error instead of running.
* A process forked by an async job under a time limit that returns into the worker: the
  job's coroutine runs in a task of its own there (``qw_core.execution._within``), so the
  child went on turning the event loop it inherited, running its siblings' code a second
  time, until the first of them came back into qw and ended it.
* A warm stop during a broker outage: the worker keeps trying to settle the jobs that ran,
  and its back-off waited on the stop event, which is set: a busy loop of broker calls
  for as long as the outage lasted.

In-process workers on the memory broker, as in test_concurrency_async_base_exceptions.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qwtest_wait import wait_for
from worker_threads import start_worker, stop_worker

from qw_core import Job
from qw_core.errors import BrokerUnavailable
from qw_core.memory import MemoryBroker

#: A time limit in JSON that no float holds (10**400 seconds: no limit at all).
ENDLESS = 10**400


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


def drained(broker: MemoryBroker) -> bool:
    return not broker.queued_job_ids() and not broker.held_job_ids("m.1")


# -- a time limit beyond any float ------------------------------------------------------


def plain(ran: list[str]) -> Any:
    def target(job_id: str, job_data: Any) -> None:
        ran.append(job_id)

    return target


def coroutine(ran: list[str]) -> Any:
    async def target(job_id: str, job_data: Any) -> None:
        await asyncio.sleep(0)
        ran.append(job_id)

    return target


@pytest.mark.parametrize(
    ("make_target", "concurrency"),
    [(plain, 1), (plain, 2), (coroutine, 2)],
    ids=["alone", "threads", "event loop"],
)
def test_a_time_limit_too_large_for_a_float_is_no_limit_and_the_job_runs(
    broker: MemoryBroker, make_target: Any, concurrency: int
) -> None:
    endless = Job.new({"n": 0}, meta={"timeout": ENDLESS})
    after = [Job.new({"n": n}) for n in range(1, 4)]
    broker.queue_jobs([endless, *after])
    ran: list[str] = []
    worker, thread = start_worker(broker, make_target(ran), concurrency=concurrency, job_timeout=30)
    try:
        wait_for(lambda: drained(broker) or not thread.is_alive(), timeout=10, what="every job to run")
        assert thread.is_alive(), "the worker's loop died"
    finally:
        stop_worker(worker, thread)
    assert broker.failed_jobs() == []
    assert sorted(ran) == sorted(job.id for job in [endless, *after])


# -- a forked child that returns into an async worker ------------------------------------


class Forking:
    """An async target: ``siblings`` jobs wait at a gate; the ``fork`` job opens it, forks
    and, in the child, returns (as a careless target would). Every job that runs past the
    gate notes its process in ``record``; the child must note nothing."""

    def __init__(self, record: Path, siblings: int) -> None:
        self.record = record
        self.siblings = siblings
        self.waiting = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, job_id: str, job_data: Any) -> None:
        if self.gate is None:
            self.gate = asyncio.Event()
        if job_data.get("fork"):
            while self.waiting < self.siblings:
                await asyncio.sleep(0.01)
            self.gate.set()  # the siblings are woken on the next turn of the event loop...
            if os.fork() == 0:
                return  # ...which, in the child, must never come
            return
        self.waiting += 1
        await self.gate.wait()
        with self.record.open("a", encoding="utf-8") as fh:
            fh.write(f"{job_id} {os.getpid()}\n")


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_a_child_forked_by_an_async_job_under_a_time_limit_runs_none_of_its_siblings(
    broker: MemoryBroker, tmp_path: Path, event_loop: str
) -> None:
    record = tmp_path / "ran"
    siblings = [Job.new({"n": n}, meta={"timeout": 30}) for n in range(5)]
    forker = Job.new({"fork": True}, meta={"timeout": 30})
    broker.queue_jobs([*siblings, forker])
    worker, thread = start_worker(
        broker, Forking(record, len(siblings)), concurrency=6, event_loop=event_loop
    )
    try:
        wait_for(lambda: drained(broker), timeout=10, what="every job to run")
    finally:
        stop_worker(worker, thread)
    rows = [line.split() for line in record.read_text(encoding="utf-8").splitlines()]
    assert {pid for _, pid in rows} == {str(os.getpid())}, "a sibling's code ran in the forked child"
    assert sorted(job_id for job_id, _ in rows) == sorted(job.id for job in siblings)
    assert broker.failed_jobs() == []


# -- a warm stop while the broker is unreachable -----------------------------------------


class Unreachable(MemoryBroker):
    """A memory broker whose ``finish_jobs`` fails as an outage until ``back`` is set,
    counting the attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.back = threading.Event()
        self.attempts = 0

    def finish_jobs(self, **kwargs: Any) -> Any:
        if not self.back.is_set():
            self.attempts += 1
            raise BrokerUnavailable("the broker is down")
        return super().finish_jobs(**kwargs)


#: Seconds the outage lasts once the worker, stopping, first tried to finish its jobs.
OUTAGE = 0.5
#: Most attempts the worker may make in that time: its back-off waits at least 0.05 s,
#: then 0.1 s, 0.2 s... (half of a window doubling from 0.1 s), so at most 4 fit in it.
MOST_ATTEMPTS = 10


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_stopping_worker_that_settles_through_an_outage_backs_off(concurrency: int) -> None:
    broker = Unreachable()
    try:
        release = threading.Event()
        jobs = [Job.new({"n": n}) for n in range(concurrency)]
        broker.queue_jobs(jobs)
        began: list[str] = []

        def target(job_id: str, job_data: Any) -> None:
            began.append(job_id)
            release.wait(10)

        worker, thread = start_worker(broker, target, concurrency=concurrency, result_ttl=0)
        try:
            wait_for(lambda: len(began) == concurrency, timeout=10, what="the jobs to start")
            worker.request_stop()  # warm: the jobs end, then the worker finishes them
            release.set()
            wait_for(lambda: broker.attempts > 0, timeout=10, what="the worker to try to finish them")
            time.sleep(OUTAGE)  # the outage itself: how long the broker stays down
            attempts = broker.attempts
            broker.back.set()
            thread.join(10)
            assert not thread.is_alive(), "the worker finished its jobs once the broker was back"
        finally:
            stop_worker(worker, thread)
        assert attempts <= MOST_ATTEMPTS, f"{attempts} attempts in {OUTAGE}s: no back-off"
        assert broker.held_job_ids("m.1") == []
        assert broker.queued_job_ids() == []
        assert broker.failed_jobs() == []
    finally:
        broker.close()
