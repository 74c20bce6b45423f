"""Threads settled as timed out run on; what their late end may and may not do.

docs/explanation/delivery.md ("A job hangs"): a job on a thread past its limit "is settled
as timed out and its thread left to end by itself, its result ignored". qw_core.execution: "what it does when
it ends changes nothing".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from qwtest_wait import wait_for

from qw_core import Job, Outcome, PluginConfig, RetryPolicy, hookimpl, make_plugin_manager
from qw_core.memory import MemoryBroker
from qw_core.worker import Worker, current_job

WAIT = 10.0


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, Any]] = []

    def note(self, hook: str, job: Job, extra: Any = None) -> None:
        with self.lock:
            self.calls.append((hook, job.id, extra))

    @hookimpl
    def qw_job_succeeded(self, job: Job, worker: Any, duration: float) -> None:
        self.note("succeeded", job)

    @hookimpl
    def qw_job_failed(self, job: Job, worker: Any, exc: BaseException, failure: Any) -> None:
        self.note("failed", job, type(exc).__name__)

    @hookimpl
    def qw_job_finished(self, job: Job, worker: Any, outcome: Outcome, duration: float) -> None:
        self.note("finished", job, outcome)

    def of(self, hook: str, job_id: str) -> list[Any]:
        with self.lock:
            return [extra for name, jid, extra in self.calls if name == hook and jid == job_id]


def run_burst(broker: MemoryBroker, target: Any, *plugins: object, **kwargs: Any) -> Worker:
    pm = make_plugin_manager(kwargs.pop("config", PluginConfig(entry_points=False)), extra=plugins)
    worker = Worker(broker, target, manager="m", name="m.1", hook=pm.hook, burst=True, **kwargs)
    worker.run()
    return worker


@pytest.mark.parametrize("ends", ["returns", "raises"])
def test_the_late_end_of_a_thread_settled_as_timed_out_fires_no_more_job_hooks(
    broker: MemoryBroker, ends: str
) -> None:
    """Its completion is built in the job's thread (JobRunner.complete) before the loop
    sees that the run was abandoned: qw_job_succeeded fires for a job already failed as
    timed out, or the qw_job_failed plugins (logging, retries, yours) are asked to decide
    about it a second time, and their decision is thrown away."""
    release = threading.Event()
    came_back = threading.Event()

    def target(job_id: str, job_data: Any) -> None:
        if job_data["stuck"]:
            release.wait(WAIT)
            came_back.set()
            if ends == "raises":
                raise ValueError("late")

    stuck = Job.new({"stuck": True}, meta={"timeout": 0.1})
    other = Job.new({"stuck": False})
    broker.queue_jobs([stuck, other])
    recorder = Recorder()

    class ReleaseWhenSettled:
        @hookimpl
        def qw_job_finished(self, job: Job, worker: Any, outcome: Outcome, duration: float) -> None:
            if job.id == stuck.id:
                release.set()

    run_burst(broker, target, recorder, ReleaseWhenSettled(), concurrency=2)
    assert came_back.wait(WAIT)
    assert recorder.of("finished", stuck.id) == [Outcome.FAILED]
    assert recorder.of("failed", stuck.id) == ["JobTimeout"], "the qw_job_failed plugins were asked once"
    assert recorder.of("succeeded", stuck.id) == [], "qw_job_succeeded fired for a job failed as timed out"


def test_a_timed_out_thread_retried_at_once_to_the_same_worker_runs_beside_its_abandoned_run_and_ends_once(
    broker: MemoryBroker,
) -> None:
    """The retry (delay 0) comes back to the only worker while the first run's thread is
    still running the same job id: the second run has its own data and current_job(), and
    the first run's late end changes nothing."""
    release = threading.Event()
    seen: dict[int, Any] = {}
    lock = threading.Lock()

    def target(job_id: str, job_data: Any) -> None:
        job = current_job()
        assert job is not None
        with lock:
            seen[job.attempt] = (job_id, job_data, job.id)
        if job.attempt == 1:
            release.wait(WAIT)

    stuck = Job.new({"payload": "A"}, meta={"timeout": 0.2})
    broker.queue_job(stuck)
    recorder = Recorder()

    class ReleaseWhenRetriedRunEnds:
        @hookimpl
        def qw_job_finished(self, job: Job, worker: Any, outcome: Outcome, duration: float) -> None:
            if outcome is Outcome.SUCCEEDED:
                release.set()

    config = PluginConfig(entry_points=False, retry=RetryPolicy(max_retries=3, backoff=0, jitter=0))
    worker = run_burst(broker, target, recorder, ReleaseWhenRetriedRunEnds(), concurrency=2, config=config)
    wait_for(release.is_set, timeout=WAIT, what="the retried run to succeed")
    assert seen[1] == seen[2] == (stuck.id, {"payload": "A"}, stuck.id)
    assert recorder.of("finished", stuck.id) == [Outcome.RETRIED, Outcome.SUCCEEDED]
    assert broker.failed_jobs() == []
    assert broker.held_job_ids(worker.name) == []
    assert broker.queued_job_ids() == []


def test_a_thread_past_its_limit_is_settled_at_its_deadline_even_while_the_loop_waits_for_new_jobs(
    broker: MemoryBroker,
) -> None:
    """qw_core.execution: "A job past its limit is settled as timed out at once by the loop".
    With a free slot and an empty queue the loop waits in a take for up to
    ``block_timeout`` (1 s by default, here 3 s), a wait nothing cuts short at a thread's
    deadline (Worker._take_batch does not bound it as _wait_time does): the job is
    settled that much late, and meanwhile it still holds its slot."""
    release = threading.Event()
    settled_after: list[float] = []
    started = threading.Event()
    t0 = [0.0]

    def target(job_id: str, job_data: Any) -> None:
        t0[0] = time.monotonic()
        started.set()
        release.wait(WAIT)

    class Timer:
        @hookimpl
        def qw_job_finished(self, job: Job, worker: Any, outcome: Outcome, duration: float) -> None:
            settled_after.append(time.monotonic() - t0[0])
            release.set()

    broker.queue_job(Job.new({"n": 1}, meta={"timeout": 0.2}))
    pm = make_plugin_manager(PluginConfig(entry_points=False), extra=(Timer(),))
    worker = Worker(broker, target, manager="m", name="m.1", hook=pm.hook, concurrency=2, block_timeout=3.0)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert started.wait(WAIT)
        wait_for(lambda: settled_after, timeout=WAIT, what="the job to be settled as timed out")
    finally:
        release.set()
        worker.request_stop()
        thread.join(WAIT)
    assert settled_after[0] < 1.0, f"settled {settled_after[0]:.2f} s after it started, for a 0.2 s limit"
