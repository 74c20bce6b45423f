"""Running jobs: one job through the job hooks, and the executors that run jobs at once.

A worker process is two parts (see :mod:`qw_core.worker`): its *loop*, which alone talks
to the broker (takes jobs, settles them) and an *executor*, which runs the jobs it is
handed and reports each as a :class:`Completion`, never calling the broker itself. The
executor is chosen by the target and the concurrency asked for:

* :class:`InlineExecutor`: a plain function, one job at a time, in the loop's own thread
  (``--concurrency 1``, the default for plain functions: the original qw's behaviour and
  its speed on quick jobs). A job that overruns its time limit is stopped by the manager,
  which kills the process: a thread running Python cannot be interrupted from outside.
* :class:`ThreadExecutor`: a plain function, ``N`` jobs at once on ``N`` threads
  (``--concurrency N``; opt-in, since whether a target is thread-safe is its author's
  call). A job past its limit is settled as timed out at once by the loop, and its thread
  is left to end by itself (it cannot be stopped); only a thread still running
  :data:`LAST_RESORT` seconds later gets the process killed by the manager.
* :class:`AsyncioExecutor`: an ``async def`` target, ``N`` jobs at once as tasks on one
  event loop in a thread of its own (``N`` defaults to :data:`DEFAULT_ASYNC_CONCURRENCY`,
  100, as taskiq's does: an async job mostly waits, and a waiting task costs a few
  kilobytes; lower it for jobs that each hold something scarce, a database connection
  say). A job past its limit is cancelled, its siblings untouched. The loop is uvloop's
  when it is installed, unless asked otherwise (:mod:`qw_core.eventloops`).

Each job runs through the same steps, written once in :class:`JobRunner`: it is marked in
hand in the shared status record, ``current_job()`` is set (a context variable, so each
thread and task has its own), ``qw_job_started`` fires, the deadline is written, the
target runs through ``qw_job_run`` (awaited, for an async job: the duration the hooks see
is the real run), ``qw_job_succeeded`` fires or the ``qw_job_failed`` plugins decide. The
loop then settles the job in the broker and fires ``qw_job_finished``.

No job counts as succeeded unless its code ran: a ``qw_job_run`` that returns an awaitable
to a synchronous executor (an ``async def`` function behind a plain wrapper, say) fails
the job with :class:`~qw_core.errors.TargetNotRun`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pluggy

from qw_core import settle
from qw_core.builtin import runner as builtin_runner
from qw_core.builtin.runner import RAN
from qw_core.errors import JobTimeout, TargetNotRun
from qw_core.eventloops import DEFAULT_EVENT_LOOP, LoopFactory, loop_factory
from qw_core.models import Decision, Failure, Job, WorkerInfo
from qw_core.policy import TIMEOUT_META
from qw_core.results import encode_value
from qw_core.status import JobStatus

log = logging.getLogger("qw.worker")

#: Jobs in flight per worker process for an ``async def`` target when none is asked for.
DEFAULT_ASYNC_CONCURRENCY = 100
#: Most jobs one worker process may run at once.
MAX_CONCURRENCY = 1000
#: Seconds past a job's deadline after which a worker whose thread (or event loop) has
#: not come back from it is killed by its manager; the job itself was settled as timed
#: out at the deadline.
LAST_RESORT = 10.0

_current_job: contextvars.ContextVar[Job | None] = contextvars.ContextVar("qw_current_job", default=None)


def current_job() -> Job | None:
    """The job the calling code is running inside, or ``None`` outside a job.

    Lets a target read what ``target(job_id, job_data)`` does not carry, such as
    ``current_job().attempt``. Each thread and task running a job sees its own.
    """
    return _current_job.get()


def is_async(target: Callable[..., Any]) -> bool:
    """Whether ``target`` is an ``async def`` function (or a callable object whose
    ``__call__`` is one, or a :func:`functools.partial` of one).

    A callable object may also say it itself, with a boolean attribute ``qw_async``: true
    if its calls return awaitables for the worker to run on its event loop. A task router
    (:class:`qw_core.tasks.Router`) does, as its functions are sync, async or both.
    """
    declared = getattr(target, "qw_async", None)
    if isinstance(declared, bool):
        return declared
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(target, "__call__", None)  # noqa: B004 - a class instance's method
    return call is not None and not inspect.isfunction(target) and inspect.iscoroutinefunction(call)


def slots_for(target: Callable[..., Any], concurrency: int | None) -> int:
    """How many jobs a worker process of ``target`` runs at once.

    :param concurrency: what was asked for; ``None``: 1 for a plain function,
        :data:`DEFAULT_ASYNC_CONCURRENCY` for an ``async def`` one.
    :raises ValueError: not between 1 and :data:`MAX_CONCURRENCY`.
    """
    if concurrency is None:
        return DEFAULT_ASYNC_CONCURRENCY if is_async(target) else 1
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise ValueError(f"concurrency must be a whole number, not {concurrency!r}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency}")
    return concurrency


@attrs.frozen
class Completion:
    """One run of a job, over: what the loop settles.

    :param run: which run this was (a number the loop gave it), so that the late end of
        a run the loop gave up on is told apart from a later run of the same job.
    :param slot: the slot it ran in.
    :param job: the job.
    :param error: what it raised (a :class:`~qw_core.errors.JobTimeout` for one cancelled
        at its deadline), or ``None``.
    :param duration: seconds the target ran.
    :param decision: for a failure, what the ``qw_job_failed`` plugins decided.
    :param failure: for a failure, how the failed-job registry describes it.
    :param result: for a success, what the target returned, as JSON text
        (:func:`qw_core.results.encode_value`); ``None`` when it returned ``None``.
    """

    run: int
    slot: int
    job: Job
    error: BaseException | None
    duration: float
    decision: Decision | None = None
    failure: Failure | None = None
    result: str | None = None


class JobRunner:
    """Runs one job through the job hooks, in whatever thread or task calls it.

    :param hook: the plugin manager's hook relay.
    :param target: the target.
    :param info: the worker, as hooks see it.
    :param status: the shared record to report to (``None``: no manager reads one).
    :param job_timeout: the default time limit (a job's ``meta["timeout"]`` overrides it).
    :param kill_after: seconds past a deadline its manager waits before killing the worker
        (``0``: at the deadline: nothing in the process times the job out).
    """

    def __init__(
        self,
        hook: pluggy.HookRelay,
        target: Callable[..., Any],
        info: WorkerInfo,
        status: JobStatus | None,
        *,
        job_timeout: float | None,
        kill_after: float,
    ) -> None:
        self.hook = hook
        self.target = target
        self.info = info
        self.status = status
        self.job_timeout = job_timeout
        self.kill_after = kill_after
        self.pid = os.getpid()  # a process the target forks has another one

    def time_limit(self, job: Job) -> float | None:
        """Seconds ``job`` may run: its ``meta["timeout"]`` if a positive number, else the
        default; ``None`` (no limit) for one beyond the largest float, which a whole number
        in JSON can be and ``float()`` would refuse with an error in the worker's loop."""
        limit = job.meta.get(TIMEOUT_META) if job.meta else None
        if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
            return float(limit) if limit <= sys.float_info.max else None
        return self.job_timeout

    def run(
        self,
        job: Job,
        slot: int,
        run: int,
        deadlines: list[float] | None = None,
        may_complete: Callable[[int], bool] | None = None,
    ) -> Completion:
        """Run ``job`` here and now (a plain function's job).

        :param deadlines: where to note, per slot, when the job must end (on
            :func:`time.monotonic`; ``0`` once it has), for a loop that times jobs out.
        :param may_complete: asked once the target is over: ``False`` if the loop settled
            the run as timed out meanwhile, and then no job hook fires for its late end.
        """
        status = self.status
        if status is not None:
            status.began(job.id, slot)
        token = _current_job.set(job)
        error: BaseException | None = None
        result: str | None = None
        start = time.perf_counter()
        try:
            limit = self._begin(job, slot)
            if deadlines is not None and limit is not None:
                deadlines[slot] = time.monotonic() + limit
            start = time.perf_counter()
            returned = self._run_hook(job)
            if inspect.isawaitable(returned):
                _discard(returned)
                raise TargetNotRun(
                    f"job {job.id}: the target (or a qw_job_run plugin) returned {type(returned).__name__}, "
                    "an awaitable this worker cannot run: nothing ran. Make the target an async def "
                    "function (qw runs those on an event loop), or have it return its result"
                )
            result = _encoded(returned, job)
        except BaseException as exc:  # SystemExit from a target fails its job like any error
            error = exc
        duration = time.perf_counter() - start
        if os.getpid() != self.pid:
            exit_forked_child(job, error)
        if deadlines is not None:
            deadlines[slot] = 0.0
        if status is not None:
            status.ended(slot)
        _current_job.reset(token)
        if may_complete is not None and not may_complete(run):
            return Completion(run, slot, job, error, duration)  # settled already: its end changes nothing
        return self.complete(job, slot, run, error, duration, result=result)

    def _begin(self, job: Job, slot: int) -> float | None:
        """The start shared by both kinds of run: the ``qw_job_started`` hooks, then the
        job's time limit noted in the status record; returns that limit."""
        if self.hook.qw_job_started.get_hookimpls():
            self.hook.qw_job_started(job=job, worker=self.info)
        limit = self.time_limit(job)
        if self.status is not None:
            self.status.started(limit, slot, kill_after=self.kill_after)
        return limit

    def _run_hook(self, job: Job) -> object:
        """``qw_job_run``: the target called through the plugins that run it. When the
        built-in runner is the only one (no plugin wraps or replaces it), it is called as
        pluggy would call it, without pluggy's call, which costs more than a no-op target
        and stands between every job handed to an idle worker and its start."""
        caller = self.hook.qw_job_run
        impls = caller.get_hookimpls()
        if len(impls) == 1 and impls[0].function is builtin_runner.qw_job_run:
            return builtin_runner.qw_job_run(job=job, worker=self.info, target=self.target)
        return caller(job=job, worker=self.info, target=self.target)

    async def run_async(self, job: Job, slot: int, run: int) -> Completion:
        """Run ``job`` as a task on the running event loop (an ``async def`` target's job);
        a job past its time limit is cancelled and fails with a
        :class:`~qw_core.errors.JobTimeout`."""
        status = self.status
        if status is not None:
            status.began(job.id, slot)
        _current_job.set(job)  # this task's own context
        error: BaseException | None = None
        result: str | None = None
        start = time.perf_counter()
        try:
            limit = self._begin(job, slot)
            start = time.perf_counter()
            returned = self._run_hook(job)
            if inspect.isawaitable(returned):
                returned = await _within(returned, limit, job, self.pid)
            result = _encoded(returned, job)
        except BaseException as exc:
            error = exc
        duration = time.perf_counter() - start
        if os.getpid() != self.pid:
            exit_forked_child(job, error)
        if status is not None:
            status.ended(slot)
        return self.complete(job, slot, run, error, duration, result=result)

    def complete(
        self,
        job: Job,
        slot: int,
        run: int,
        error: BaseException | None,
        duration: float,
        *,
        result: str | None = None,
    ) -> Completion:
        """``qw_job_succeeded``, or the ``qw_job_failed`` plugins' decision: the run, over."""
        if error is None:
            settle.notify(self.hook.qw_job_succeeded, job=job, worker=self.info, duration=duration)
            return Completion(run, slot, job, None, duration, result=result)
        kind = "timeout" if isinstance(error, JobTimeout) else "error"
        failure = Failure.from_exception(error, worker=self.info.name, kind=kind)
        decision = settle.decide(self.hook, job, self.info, error, failure)
        return Completion(run, slot, job, error, duration, decision, failure)


def _encoded(returned: object, job: Job) -> str | None:
    """What a target returned, as the JSON text kept as its result; ``None`` for nothing.

    :raises InvalidResult: it returned something that is not JSON (the job fails).
    """
    if returned is None or returned is RAN:
        return None
    return encode_value(returned, job.id)


async def _within(awaitable: Awaitable[Any], limit: float | None, job: Job, pid: int) -> object:
    """Await ``awaitable``, cancelling it after ``limit`` seconds (a :class:`JobTimeout`);
    what it returned. ``pid``: the worker's process (see :func:`_captured`)."""
    if limit is None:
        return await awaitable
    task = asyncio.ensure_future(_captured(awaitable, job, pid))
    done, _ = await asyncio.wait({task}, timeout=limit)
    if done:
        returned, exit_ = task.result()  # its own exception, if it raised one asyncio lets through
        if exit_ is not None:
            raise exit_
        return returned
    task.cancel()
    with contextlib.suppress(BaseException):  # cancelled, or raised on its way out: timed out all the same
        await task
    raise JobTimeout(f"job {job.id} ran longer than its {limit:g}s limit; it was cancelled")


async def _captured(awaitable: Awaitable[Any], job: Job, pid: int) -> tuple[object, BaseException | None]:
    """Await ``awaitable`` in a task of its own, handing back a ``SystemExit`` or
    ``KeyboardInterrupt`` it raises: asyncio lets those out of a task and out of the event
    loop itself, which would stop every job in flight; the job's own task raises it again,
    where it fails that job alone.

    A process the target forked (``pid`` is not this one) ends here, the moment the target
    is over: the job's own task would only see it a turn of the event loop later, and in
    that turn the child would run the code of the jobs in flight beside it a second time.
    """
    error: BaseException | None = None
    try:
        return await awaitable, None
    except (SystemExit, KeyboardInterrupt) as exc:
        error = exc
        return None, exc
    except BaseException as exc:
        error = exc
        raise
    finally:
        if os.getpid() != pid:
            exit_forked_child(job, error)


def _discard(awaitable: object) -> None:
    """Close a coroutine nobody will await (no "never awaited" warning for it)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):  # an awaitable's own close: nothing to do about it
            close()


def exit_forked_child(job: Job, error: BaseException | None) -> None:
    """End a process that a job's target forked and that came back into qw.

    Only the worker itself may settle the job: a child going on from here would run the
    worker's loop a second time under its name.
    """
    if isinstance(error, SystemExit):  # the child ended itself the usual way
        code = error.code
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)
    print(
        f"qw: a process forked by the target of job {job.id} (pid {os.getpid()}) returned "
        "into the worker; it exits now (end such a child with os._exit)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(0 if error is None else 1)


# -- executors -------------------------------------------------------------------------


class Executor(abc.ABC):
    """Runs the jobs the loop hands it, up to :attr:`capacity` at once, and reports each as
    a :class:`Completion`. Never calls the broker.

    :param on_complete: called (in the thread that ran the job) after a completion is
        ready, so that a loop waiting in the broker for new jobs can be woken.
    """

    #: Whether the loop must time out overdue jobs itself (it cannot stop them).
    times_out_jobs = False

    def __init__(self, runner: JobRunner, capacity: int, on_complete: Callable[[], None]) -> None:
        self.runner = runner
        self.capacity = capacity
        self.on_complete = on_complete

    @abc.abstractmethod
    def submit(self, job: Job, slot: int, run: int) -> None:
        """Start running ``job`` in ``slot`` (free: the loop keeps count)."""

    @abc.abstractmethod
    def completed(self, timeout: float) -> list[Completion]:
        """The runs over since the last call; waits up to ``timeout`` seconds for one."""

    def pending(self) -> bool:
        """Whether a completion is ready for :meth:`completed` (no wait)."""
        return False

    def deadline(self, slot: int) -> float:
        """When the job in ``slot`` must end (``0``: no limit, or none running); only for
        an executor that :attr:`times_out_jobs`."""
        return 0.0

    def abandon(self, run: int) -> bool:
        """The loop settles ``run`` as timed out: its late end is to fire no hook. ``False``
        if it is ending already (its completion is on its way; let that settle it)."""
        return False

    def close(self) -> None:  # noqa: B027 - most executors have nothing to stop
        """Stop, once nothing is in flight (a job still running is left to the process's end)."""


class InlineExecutor(Executor):
    """One job at a time, run by :meth:`submit` itself in the loop's thread."""

    def __init__(self, runner: JobRunner, on_complete: Callable[[], None]) -> None:
        super().__init__(runner, 1, on_complete)
        self._done: list[Completion] = []

    def submit(self, job: Job, slot: int, run: int) -> None:
        self._done.append(self.runner.run(job, slot, run))

    def completed(self, timeout: float) -> list[Completion]:
        done, self._done = self._done, []
        return done

    def pending(self) -> bool:
        return bool(self._done)


class _Reported:
    """Completions handed from the threads that ran the jobs to the loop, a batch at a time."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[Completion]] = queue.SimpleQueue()

    def put(self, completions: list[Completion]) -> None:
        self._queue.put(completions)

    def pending(self) -> bool:
        return not self._queue.empty()

    def take(self, timeout: float) -> list[Completion]:
        try:
            done = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return []
        while True:
            try:
                done += self._queue.get_nowait()
            except queue.Empty:
                return done


class ThreadExecutor(Executor):
    """Up to ``capacity`` jobs at once, each on a thread of a pool of that size."""

    times_out_jobs = True

    def __init__(self, runner: JobRunner, capacity: int, on_complete: Callable[[], None]) -> None:
        super().__init__(runner, capacity, on_complete)
        self._todo: queue.SimpleQueue[tuple[Job, int, int] | None] = queue.SimpleQueue()
        self._reported = _Reported()
        self._deadlines = [0.0] * capacity
        # Runs whose end is being reported, and runs the loop settled as timed out: a run
        # is one or the other, never both (see abandon()).
        self._lock = threading.Lock()
        self._completing: set[int] = set()
        self._abandoned: set[int] = set()
        self._threads = [
            threading.Thread(target=self._serve, name=f"qw-job-{n}", daemon=True) for n in range(capacity)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        while (item := self._todo.get()) is not None:
            job, slot, run = item
            try:
                done = self.runner.run(job, slot, run, self._deadlines, self._may_complete)
            except BaseException as exc:  # a hook's SystemExit, or a bug of qw's own: the job fails
                log.exception("running job %s failed", job.id)
                done = self._failed(job, slot, run, exc)
            with self._lock:
                self._completing.discard(run)
                self._abandoned.discard(run)
            self._reported.put([done])
            self.on_complete()

    def _failed(self, job: Job, slot: int, run: int, exc: BaseException) -> Completion:
        try:
            return self.runner.complete(job, slot, run, exc, 0.0)
        except BaseException:  # nothing more to ask the plugins
            failure = Failure.from_exception(exc, worker=self.runner.info.name)
            return Completion(run, slot, job, exc, 0.0, Decision.fail(), failure)

    def _may_complete(self, run: int) -> bool:
        with self._lock:
            if run in self._abandoned:
                return False
            self._completing.add(run)
            return True

    def abandon(self, run: int) -> bool:
        with self._lock:
            if run in self._completing:
                return False
            self._abandoned.add(run)
            return True

    def submit(self, job: Job, slot: int, run: int) -> None:
        self._todo.put((job, slot, run))

    def completed(self, timeout: float) -> list[Completion]:
        return self._reported.take(timeout)

    def pending(self) -> bool:
        return self._reported.pending()

    def deadline(self, slot: int) -> float:
        return self._deadlines[slot]

    def close(self) -> None:
        for _ in self._threads:
            self._todo.put(None)


class AsyncioExecutor(Executor):
    """Up to ``capacity`` jobs at once, as tasks on one event loop in a thread of its own.

    Both ways across the two threads go a batch at a time, since each crossing costs
    both threads a wake-up and a switch of the GIL: the jobs handed over while the event
    loop was busy start on one wake-up of it, and the jobs that end in one turn of the
    event loop are reported together at the start of the next (one wake-up of the loop
    that settles them, and so, with a loop waiting for free slots, one take for them all).
    """

    def __init__(
        self,
        runner: JobRunner,
        capacity: int,
        on_complete: Callable[[], None],
        *,
        loop_factory: LoopFactory = asyncio.new_event_loop,
    ) -> None:
        super().__init__(runner, capacity, on_complete)
        self._reported = _Reported()
        self._loop = loop_factory()
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        self._closing = False
        # Jobs handed over and not started yet: the loop is woken once for a batch of them.
        self._lock = threading.Lock()
        self._incoming: list[tuple[Job, int, int]] = []
        # Jobs that ended in this turn of the event loop (touched in its thread only).
        self._ended: list[Completion] = []
        self._thread = threading.Thread(target=self._serve, name="qw-event-loop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            while not self._closing:
                try:
                    self._loop.run_forever()
                except BaseException:  # a task let out SystemExit, say: the loop goes on
                    log.exception("the event loop running the jobs stopped on an error; it goes on")
        finally:
            self._loop.close()

    def submit(self, job: Job, slot: int, run: int) -> None:
        with self._lock:
            self._incoming.append((job, slot, run))
            if len(self._incoming) > 1:  # a wake-up is on its way already
                return
        self._loop.call_soon_threadsafe(self._start_incoming)

    def _start_incoming(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for job, slot, run in incoming:
            # A task runs in a copy of the context it was created in: current_job() is its own.
            task = self._loop.create_task(self._run(job, slot, run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job, slot: int, run: int) -> None:
        try:
            done = await self.runner.run_async(job, slot, run)
        except BaseException as exc:  # a hook's SystemExit, or a bug of qw's own: the job fails
            log.exception("running job %s failed", job.id)
            try:
                done = self.runner.complete(job, slot, run, exc, 0.0)
            except BaseException:  # nothing more to ask the plugins
                failure = Failure.from_exception(exc, worker=self.runner.info.name)
                done = Completion(run, slot, job, exc, 0.0, Decision.fail(), failure)
        if not self._ended:  # the first to end in this turn: report them all in the next
            self._loop.call_soon(self._report_ended)
        self._ended.append(done)

    def _report_ended(self) -> None:
        ended, self._ended = self._ended, []
        self._reported.put(ended)
        self.on_complete()

    def completed(self, timeout: float) -> list[Completion]:
        return self._reported.take(timeout)

    def pending(self) -> bool:
        return self._reported.pending()

    def close(self) -> None:
        self._closing = True
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def make_executor(
    runner: JobRunner,
    concurrency: int,
    on_complete: Callable[[], None],
    *,
    event_loop: str = DEFAULT_EVENT_LOOP,
) -> Executor:
    """The executor for ``runner``'s target at ``concurrency`` (see the module's docstring);
    an async target's runs on the event loop ``event_loop`` names (:mod:`qw_core.eventloops`)."""
    if is_async(runner.target):
        return AsyncioExecutor(runner, concurrency, on_complete, loop_factory=loop_factory(event_loop))
    if concurrency > 1:
        return ThreadExecutor(runner, concurrency, on_complete)
    return InlineExecutor(runner, on_complete)


def kill_after_for(target: Callable[..., Any], concurrency: int) -> float:
    """How long past a job's deadline its manager waits before killing the worker: at once
    for one plain job at a time (nothing else can stop it), :data:`LAST_RESORT` otherwise
    (the worker times the job out itself)."""
    return LAST_RESORT if is_async(target) or concurrency > 1 else 0.0
