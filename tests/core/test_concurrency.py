"""Jobs in flight at once in one worker: async def targets on an event loop, plain functions
on threads; each job's hooks, current_job() and time limit its own; nothing lost on a stop.

Overlap is proven with barriers (every job of a batch must be running at the same time
for any of them to pass), never with timings.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from qwtest_wait import wait_for

from qw_core import (
    Decision,
    Job,
    Outcome,
    PluginConfig,
    RetryPolicy,
    eventloops,
    hookimpl,
    make_plugin_manager,
)
from qw_core.errors import ConfigurationError, TargetNotRun
from qw_core.execution import DEFAULT_ASYNC_CONCURRENCY, AsyncioExecutor, JobRunner, is_async, slots_for
from qw_core.memory import MemoryBroker
from qw_core.models import WorkerInfo
from qw_core.status import JobStatus
from qw_core.testing import WOKEN_WITHIN
from qw_core.worker import Worker, current_job

BARRIER_TIMEOUT = 10.0


@pytest.fixture(autouse=True, params=["uvloop", "asyncio"])
def event_loop_installed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with uvloop installed (the default loop is then uvloop's) and
    as if it were not (the standard loop), so both are proven on the whole module."""
    if request.param == "asyncio":
        monkeypatch.setattr(eventloops, "_uvloop_factory", lambda: None)
    assert eventloops.event_loop_in_use("auto") == request.param
    return str(request.param)


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


class Recorder:
    """A plugin noting every job hook, per job, in the order they fire."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, Any]] = []

    def note(self, hook: str, job: Job, extra: Any = None) -> None:
        with self.lock:
            self.calls.append((hook, job.id, extra))

    @hookimpl
    def qw_job_started(self, job: Job, worker: Any) -> None:
        self.note("started", job, current_job() is job)

    @hookimpl
    def qw_job_succeeded(self, job: Job, worker: Any, duration: float) -> None:
        self.note("succeeded", job, duration)

    @hookimpl
    def qw_job_finished(self, job: Job, worker: Any, outcome: Outcome, duration: float) -> None:
        self.note("finished", job, outcome)

    def of(self, hook: str) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for name, job_id, extra in self.calls:
            if name == hook:
                found.setdefault(job_id, []).append(extra)
        return found


def work(
    broker: MemoryBroker,
    target: Callable[..., Any],
    *,
    plugins: PluginConfig | None = None,
    extra: tuple[object, ...] = (),
    **kwargs: Any,
) -> Worker:
    """Run a burst worker in this thread until nothing is left to take."""
    pm = make_plugin_manager(plugins or PluginConfig(entry_points=False), extra=extra)
    worker = Worker(broker, target, manager="m", name="m.1", hook=pm.hook, burst=True, **kwargs)
    worker.run()
    return worker


# -- the bug: an async def target ran without running ----------------------------------


def test_an_async_target_runs_its_body_and_succeeds_only_after_it(broker: MemoryBroker) -> None:
    ran: list[Any] = []

    async def handle(job_id: str, job_data: Any) -> None:
        await asyncio.sleep(0.01)
        ran.append(job_data)

    job = broker.queue_job(Job.new({"a": 1}))
    recorder = Recorder()
    work(broker, handle, extra=(recorder,))
    assert ran == [{"a": 1}]
    [[duration]] = recorder.of("succeeded").values()
    assert duration >= 0.01, "the duration is the awaited run, not the creation of a coroutine"
    assert recorder.of("finished") == {job: [Outcome.SUCCEEDED]}
    assert broker.failed_jobs() == []


def returns_a_coroutine(job_id: str, job_data: Any) -> Any:
    async def body() -> None:
        raise AssertionError("never awaited, never run")

    return body()


def test_a_plain_target_that_returns_an_awaitable_fails_and_nothing_counts_as_run(
    broker: MemoryBroker,
) -> None:
    job_id = broker.queue_job(Job.new({"a": 1}))
    recorder = Recorder()
    with warnings.catch_warnings():
        # A coroutine left un-awaited would warn (RuntimeWarning); only that is an error
        # here, not a file another test left for the garbage collector (ResourceWarning).
        warnings.simplefilter("error", RuntimeWarning)
        work(broker, returns_a_coroutine, extra=(recorder,))
    assert recorder.of("succeeded") == {}
    assert recorder.of("finished") == {job_id: [Outcome.FAILED]}
    [failed] = broker.failed_jobs()
    assert failed.failure.exc_type == "qw_core.errors.TargetNotRun"
    assert "nothing ran" in failed.failure.message
    assert TargetNotRun.__name__ in failed.failure.traceback


class AwaitableRunner:
    """A runner plugin that hands back an awaitable instead of running a plain target."""

    @hookimpl(tryfirst=True)
    def qw_job_run(self, job: Job, worker: Any, target: Callable[..., Any]) -> object:
        return asyncio.sleep(0)


def test_a_runner_plugin_that_returns_an_awaitable_fails_the_job(broker: MemoryBroker) -> None:
    broker.queue_job(Job.new({"a": 1}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an un-awaited coroutine's warning
        work(broker, lambda job_id, job_data: None, extra=(AwaitableRunner(),))
    [failed] = broker.failed_jobs()
    assert failed.failure.exc_type == "qw_core.errors.TargetNotRun"


# -- choosing how jobs run -------------------------------------------------------------


async def async_handle(job_id: str, job_data: Any) -> None:
    pass


class AsyncCallable:
    async def __call__(self, job_id: str, job_data: Any) -> None:
        pass


def test_what_counts_as_an_async_target_and_the_default_concurrency() -> None:
    import functools

    assert is_async(async_handle)
    assert is_async(AsyncCallable())
    assert is_async(functools.partial(async_handle, "x"))
    assert not is_async(returns_a_coroutine)
    assert slots_for(async_handle, None) == DEFAULT_ASYNC_CONCURRENCY
    assert slots_for(returns_a_coroutine, None) == 1
    assert slots_for(returns_a_coroutine, 8) == 8


@pytest.mark.parametrize("concurrency", [0, -1, 1001, True, 2.5])
def test_a_concurrency_out_of_range_is_refused(broker: MemoryBroker, concurrency: Any) -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        Worker(broker, async_handle, manager="m", concurrency=concurrency)


def test_a_status_record_too_small_is_refused(broker: MemoryBroker) -> None:
    import multiprocessing

    status = JobStatus(multiprocessing.get_context("spawn"), 2)
    with pytest.raises(ConfigurationError, match="2 slots for 4 jobs"):
        Worker(broker, async_handle, manager="m", concurrency=4, status=status)


# -- jobs in flight at once ------------------------------------------------------------


@pytest.mark.parametrize("how", ["async", "threads"])
def test_concurrency_jobs_really_run_at_once_each_with_its_own_current_job(
    broker: MemoryBroker, how: str
) -> None:
    concurrency = 5
    jobs = [Job.new({"n": n}) for n in range(3 * concurrency)]
    broker.queue_jobs(jobs)
    seen: dict[str, Any] = {}
    lock = threading.Lock()

    if how == "threads":
        barrier = threading.Barrier(concurrency, timeout=BARRIER_TIMEOUT)

        def target(job_id: str, job_data: Any) -> None:
            barrier.wait()  # breaks (and fails the job) unless `concurrency` run together
            with lock:
                seen[job_id] = (job_data, current_job())

    else:
        arrived = 0
        everybody: asyncio.Event | None = None

        async def target(job_id: str, job_data: Any) -> None:  # type: ignore[misc]
            nonlocal arrived, everybody
            if everybody is None:
                everybody = asyncio.Event()
            arrived += 1
            if arrived % concurrency == 0:
                everybody.set()
            await asyncio.wait_for(everybody.wait(), BARRIER_TIMEOUT)
            if arrived % concurrency == 0:
                everybody = None  # the next round waits for its own
            await asyncio.sleep(0)
            seen[job_id] = (job_data, current_job())

    recorder = Recorder()
    work(broker, target, concurrency=concurrency, extra=(recorder,))
    assert broker.failed_jobs() == [], "every round had all its jobs running at once"
    assert sorted(seen) == sorted(job.id for job in jobs)
    for job in jobs:
        data, current = seen[job.id]
        assert data == job.data
        assert current is not None
        assert current.id == job.id, "current_job() is the job's own"
    assert all(flags == [True] for flags in recorder.of("started").values())
    assert {job_id: len(outcomes) for job_id, outcomes in recorder.of("finished").items()} == {
        job.id: 1 for job in jobs
    }
    assert broker.queued_job_ids() == []
    assert broker.held_job_ids("m.1") == []


def test_threads_retry_and_fail_each_job_on_its_own(broker: MemoryBroker) -> None:
    jobs = [Job.new({"fail": n % 3 == 0, "n": n}) for n in range(12)]
    broker.queue_jobs(jobs)
    runs: dict[str, int] = {}
    lock = threading.Lock()

    def target(job_id: str, job_data: Any) -> None:
        with lock:
            runs[job_id] = runs.get(job_id, 0) + 1
        if job_data["fail"]:
            raise ValueError(job_data["n"])

    plugins = PluginConfig(entry_points=False, retry=RetryPolicy(max_retries=1, backoff=0.0, jitter=0.0))
    work(broker, target, plugins=plugins, concurrency=4)
    failing = {job.id for job in jobs if job.data["fail"]}  # type: ignore[index]
    assert {entry.job.id for entry in broker.failed_jobs()} == failing
    assert runs == {job.id: 2 if job.id in failing else 1 for job in jobs}


# -- time limits -----------------------------------------------------------------------


def test_an_async_job_past_its_limit_is_cancelled_and_its_siblings_are_untouched(
    broker: MemoryBroker,
) -> None:
    cancelled = threading.Event()

    async def target(job_id: str, job_data: Any) -> None:
        if job_data["slow"]:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        else:
            await asyncio.sleep(0.2)

    slow = Job.new({"slow": True}, meta={"timeout": 0.1})
    quick = [Job.new({"slow": False}, meta={"timeout": 5}) for _ in range(3)]
    broker.queue_jobs([slow, *quick])
    recorder = Recorder()
    work(broker, target, concurrency=4, extra=(recorder,))
    assert cancelled.is_set()
    [failed] = broker.failed_jobs()
    assert failed.job.id == slow.id
    assert failed.failure.kind == "timeout"
    assert "0.1s limit" in failed.failure.message
    outcomes = recorder.of("finished")
    assert outcomes == {slow.id: [Outcome.FAILED], **{job.id: [Outcome.SUCCEEDED] for job in quick}}


def test_a_thread_past_its_limit_is_settled_as_timed_out_and_its_late_end_changes_nothing(
    broker: MemoryBroker,
) -> None:
    release = threading.Event()
    ended = threading.Event()

    def target(job_id: str, job_data: Any) -> None:
        if job_data["stuck"]:
            release.wait(BARRIER_TIMEOUT)
            ended.set()

    stuck = Job.new({"stuck": True}, meta={"timeout": 0.1})
    others = [Job.new({"stuck": False}) for _ in range(5)]
    broker.queue_jobs([stuck, *others])
    recorder = Recorder()

    class ReleaseWhenSettled:
        @hookimpl
        def qw_job_finished(self, job: Job, worker: Any, outcome: Outcome, duration: float) -> None:
            if job.id == stuck.id:
                release.set()  # the stuck thread comes back after its job was settled

    work(broker, target, concurrency=2, extra=(recorder, ReleaseWhenSettled()))
    assert ended.wait(BARRIER_TIMEOUT), "the worker waited for the stuck thread before it stopped"
    [failed] = broker.failed_jobs()
    assert failed.job.id == stuck.id
    assert failed.failure.kind == "timeout"
    finished = recorder.of("finished")
    assert finished[stuck.id] == [Outcome.FAILED], "settled once, as timed out, not again when it came back"
    assert all(finished[job.id] == [Outcome.SUCCEEDED] for job in others)
    assert broker.held_job_ids("m.1") == []


# -- stopping --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["async", "threads"])
def test_a_stop_lets_every_job_in_flight_finish_and_puts_back_the_waiting(
    broker: MemoryBroker, how: str
) -> None:
    concurrency = 4
    jobs = [Job.new({"n": n}) for n in range(20)]
    broker.queue_jobs(jobs)
    started = threading.Semaphore(0)
    release = threading.Event()
    worker: Worker

    if how == "threads":

        def target(job_id: str, job_data: Any) -> None:
            started.release()
            release.wait(BARRIER_TIMEOUT)

    else:

        async def target(job_id: str, job_data: Any) -> None:  # type: ignore[misc]
            started.release()
            while not release.is_set():
                await asyncio.sleep(0.005)

    pm = make_plugin_manager(PluginConfig(entry_points=False))
    worker = Worker(broker, target, manager="m", name="m.1", hook=pm.hook, concurrency=concurrency)
    thread = threading.Thread(target=worker.run)
    thread.start()
    for _ in range(concurrency):
        assert started.acquire(timeout=BARRIER_TIMEOUT), "all slots busy"
    worker.request_stop()
    release.set()
    thread.join(BARRIER_TIMEOUT)
    assert not thread.is_alive()
    left = broker.queued_job_ids()
    assert len(left) == len(jobs) - concurrency, "the jobs in flight finished; the rest wait"
    assert broker.held_job_ids("m.1") == []
    assert broker.failed_jobs() == []
    assert broker.workers("m") == [], "a worker that settled everything deregisters"


def test_a_job_that_completes_while_its_worker_waits_for_new_jobs_is_settled_at_once(
    broker: MemoryBroker,
) -> None:
    # The loop waits in a take (the queue is empty) with a job in flight; the job's end must
    # end that wait (Broker.nudge), not the take's timeout (30 s here).
    release = threading.Event()
    running = threading.Event()

    def target(job_id: str, job_data: Any) -> None:
        running.set()
        release.wait(BARRIER_TIMEOUT)

    job_id = broker.queue_job(Job.new({"n": 1}))
    pm = make_plugin_manager(PluginConfig(entry_points=False))
    worker = Worker(broker, target, manager="m", name="m.1", hook=pm.hook, concurrency=2, block_timeout=30)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert running.wait(BARRIER_TIMEOUT)
        wait_for(lambda: broker.blocked_takes > 0, what="the loop to wait for new jobs")
        release.set()
        wait_for(lambda: broker.get_job(job_id) is None, timeout=WOKEN_WITHIN, what="the job to be finished")
    finally:
        release.set()
        worker.request_stop()
        broker.nudge("m.1")
        thread.join(BARRIER_TIMEOUT)
    assert not thread.is_alive()


def test_the_jobs_that_end_in_one_turn_of_the_event_loop_are_reported_together() -> None:
    # Each report wakes the worker's loop (another thread: a wake-up and a switch of the
    # GIL), so the jobs that end together are reported once, and their loop settles them
    # together (with a take for all their slots).
    waiting: list[asyncio.Future[None]] = []

    async def target(job_id: str, job_data: Any) -> None:
        loop = asyncio.get_running_loop()
        if not waiting:
            waiting.append(loop.create_future())
        released = waiting[0]
        if job_data["n"] == 2:  # the last to start: release all three in one turn
            loop.call_soon(released.set_result, None)
        await released

    pm = make_plugin_manager(PluginConfig(entry_points=False))
    info = WorkerInfo(name="m.1", manager="m", pid=os.getpid())
    runner = JobRunner(pm.hook, target, info, None, job_timeout=None, kill_after=0.0)
    reports: list[int] = []
    executor = AsyncioExecutor(runner, 3, lambda: reports.append(1))
    try:
        jobs = [Job.new({"n": n}) for n in range(3)]
        for slot, job in enumerate(jobs):
            executor.submit(job, slot, slot + 1)
        done = executor.completed(BARRIER_TIMEOUT)
        assert sorted(completion.run for completion in done) == [1, 2, 3]
        assert all(completion.error is None for completion in done)
        assert reports == [1]
    finally:
        executor.close()


# -- suspects --------------------------------------------------------------------------


def test_a_suspect_runs_alone(broker: MemoryBroker) -> None:
    jobs = [Job.new({"n": n}) for n in range(6)]
    broker.queue_jobs(jobs)
    broker.take(manager="m", worker="m.9", limit=6)
    broker.recover_worker(manager="m", worker="m.9", suspects=[jobs[2].id])
    running: set[str] = set()
    beside: dict[str, set[str]] = {}
    lock = threading.Lock()

    def target(job_id: str, job_data: Any) -> None:
        with lock:
            beside[job_id] = set(running)
            running.add(job_id)
        time.sleep(0.02)
        with lock:
            beside[job_id] |= running - {job_id}
            running.discard(job_id)

    work(broker, target, concurrency=3)
    assert sorted(beside) == sorted(job.id for job in jobs)
    assert beside[jobs[2].id] == set(), "the suspect ran with nothing beside it"
    assert any(beside[job.id] for job in jobs if job.id != jobs[2].id), "the others did overlap"


# -- hooks of async jobs ---------------------------------------------------------------


class AsyncAround:
    """A qw_job_run wrapper that awaits around an async job: the supported way for a
    plugin to await in a job's hooks (pluggy's hooks themselves are plain calls)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl(wrapper=True)
    def qw_job_run(self, job: Job, worker: Any, target: Callable[..., Any]) -> Any:
        result = yield
        if not asyncio.iscoroutine(result):
            return result

        async def around() -> Any:
            await asyncio.sleep(0)
            self.events.append(f"before {job.data['n']}")
            try:
                return await result
            finally:
                self.events.append(f"after {job.data['n']}")

        return around()


def test_a_plugin_can_await_around_an_async_job(broker: MemoryBroker) -> None:
    order: list[str] = []
    plugin = AsyncAround()

    async def target(job_id: str, job_data: Any) -> None:
        plugin.events.append(f"ran {job_data['n']}")

    broker.queue_job(Job.new({"n": 1}))
    work(broker, target, extra=(plugin,))
    order = plugin.events
    assert order == ["before 1", "ran 1", "after 1"]


def test_a_plugin_decision_applies_to_an_async_job(broker: MemoryBroker) -> None:
    class Drop:
        @hookimpl
        def qw_job_failed(self, job: Job, worker: Any, exc: BaseException, failure: Any) -> Decision:
            return Decision.drop()

    async def target(job_id: str, job_data: Any) -> None:
        raise ValueError("no")

    broker.queue_job(Job.new({"n": 1}))
    recorder = Recorder()
    work(broker, target, extra=(Drop(), recorder))
    assert list(recorder.of("finished").values()) == [[Outcome.DROPPED]]
    assert broker.failed_jobs() == []
