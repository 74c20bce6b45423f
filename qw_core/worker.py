"""The worker loop: take → run → settle, until asked to stop.

One :class:`Worker` runs in each worker process (or thread). It is two parts: the loop
here, which alone talks to the broker, and an executor (:mod:`qw_core.execution`) that
runs the jobs it is handed (one at a time in the loop's own thread, or ``concurrency`` at
once on threads or an event loop) and reports each as a completion. Each turn of the loop
is one broker call that finishes the jobs just completed and takes as many as there are
free slots (:meth:`Consumer.take`), so a fast backend serves a job in one round trip; an
idle worker waits in that call, and a job of its own that completes meanwhile ends the
wait (:meth:`Consumer.nudge`), so its slot is filled at once.

Signals: a worker process ignores SIGINT and SIGQUIT (a Ctrl-C or Ctrl-\\ to the process
group is for the manager, which then stops workers warmly or cold) and treats SIGTERM as
"finish the jobs in flight, take nothing new". It also stops if its manager process
disappears, because recovery will hand the jobs it would take to others.

Broker trouble: a call that fails with :class:`~qw_core.errors.BrokerUnavailable` is
retried after a capped, jittered back-off (:mod:`qw_core.backoff`), logging once per
outage, so a Redis restart or failover pauses the worker instead of killing it. Any other
error of a broker call is logged with its traceback and retried the same way: the loop
never dies of one. A take gives up when the worker is asked to stop; settling a job that
ran (finish, fail, retry) keeps trying until it works, the manager is gone, or (for an
error that is not an outage) the worker is asked to stop; what stays held is recovered.

What a target does is its job's business, never the worker's: an exception of any kind,
``SystemExit`` and ``KeyboardInterrupt`` included, fails that job (retried, failed or
dropped as the plugins decide) and the worker goes on. A process the target forked that
returns into qw exits at once, before it can touch the broker or the shared record.

A worker paused (SIGSTOP) or cut off for long enough may have been reaped, its held jobs
handed to others. So before it starts a job that waited in its batch for longer than
:attr:`Worker.finish_delay`, it asks the broker which of the waiting jobs it still holds
and drops the others: only the jobs it had in hand when it stopped can run twice.

A job handed out as a *suspect* (its last worker died running it beside others, see
:meth:`Consumer.recover_worker`) runs alone: the worker lets the jobs in flight end, runs
it with nothing beside it, and takes nothing until it is over, so that if it kills this
process too, it alone is blamed.

Time limits: before calling the target the worker writes the job id and its deadline to
the shared record its manager reads (:mod:`qw_core.status`), two memory writes per job.
One plain job at a time is stopped by the manager, which kills the worker; jobs on
threads are settled as timed out by the loop at their deadline, and async jobs are
cancelled, the manager killing the process only if they do not come back (see
:data:`qw_core.execution.LAST_RESORT`).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import pluggy

from qw_core import settle
from qw_core.backoff import Backoff
from qw_core.broker import Consumer
from qw_core.errors import BrokerUnavailable, ConfigurationError, JobTimeout, QwError
from qw_core.eventloops import DEFAULT_EVENT_LOOP, check_event_loop
from qw_core.execution import (
    Completion,
    Executor,
    JobRunner,
    current_job,
    kill_after_for,
    make_executor,
    slots_for,
)
from qw_core.models import Action, Decision, Failure, Job, Outcome, WorkerInfo
from qw_core.naming import check_manager_name, check_queues
from qw_core.plugins import make_plugin_manager
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.recycling import Recycling
from qw_core.results import DEFAULT_RESULT_TTL, check_ttl
from qw_core.status import JobStatus
from qw_core.targets import TargetLoader

__all__ = ["DEFAULT_PREFETCH", "ERROR_ATTEMPTS", "Worker", "WorkerNotStarted", "current_job"]

log = logging.getLogger("qw.worker")

_T = TypeVar("_T")

#: How many jobs a worker may take at once unless told otherwise (``qw run --prefetch``).
#: It takes more than it has free slots only while the queue is deep and jobs are quick
#: (see :meth:`Worker._next_limit`), so a batch never keeps slow jobs from idle workers.
DEFAULT_PREFETCH = 32

#: How often a broker call that settles a job is tried when it fails with an error that
#: is not an outage (see :meth:`Worker._patiently`).
ERROR_ATTEMPTS = 5


@attrs.define
class _Batch:
    """What a worker's takes gave it, and how it is getting on with it.

    :param waiting: jobs taken and not started yet.
    :param finished: jobs that succeeded, to finish with the next take.
    :param failing: jobs that failed for good, with their failures, to write before the
        next take, together (see :meth:`Worker._failed`).
    :param deferred_since: when the first job in ``finished`` or ``failing`` started.
    :param limit: how many jobs the last take asked for beyond the free slots.
    :param size: how many it got.
    :param taken_at: when.
    :param confirmed_at: when the broker last said this worker holds ``waiting``.
    :param drained: the last take found nothing (in burst mode: wait for the jobs in
        flight before asking again).
    """

    waiting: deque[Job] = attrs.field(factory=deque)
    finished: list[str] = attrs.field(factory=list)
    failing: list[tuple[Job, Failure]] = attrs.field(factory=list)
    deferred_since: float = 0.0
    limit: int = 1
    size: int = 0
    taken_at: float = 0.0
    confirmed_at: float = 0.0
    drained: bool = False


@attrs.define
class _Flight:
    """A job handed to the executor: which slot it runs in, when it was handed over (on the
    loop's clock), and the earliest its time limit can run out (on :func:`time.monotonic`;
    ``0``: none), before its thread says exactly when."""

    slot: int
    job: Job
    started: float
    due_at: float = 0.0


class WorkerNotStarted(QwError):
    """A ``qw_worker_started`` plugin raised: the worker did not take any job."""


class Worker:
    """Takes jobs for one worker name and runs them through the job hooks.

    :param broker: the broker this worker's loop alone uses.
    :param target: the callable (or target string) every job is handed to.
    :param manager: the manager this worker belongs to.
    :param name: the worker's name; defaults to ``<manager>.<pid>``.
    :param hook: the plugin manager's hook relay; defaults to a fresh default one.
    :param concurrency: how many jobs run at once: on an event loop for an ``async def``
        target (default :data:`~qw_core.execution.DEFAULT_ASYNC_CONCURRENCY`), on that
        many threads for a plain function when more than 1 (default 1: the loop's own
        thread). See :mod:`qw_core.execution`.
    :param prefetch: the most jobs one take may hand over beyond the free slots; ``1``
        means none are held waiting. Batches grow only while the queue is deep and jobs
        are quick (see :meth:`_next_limit`). A job finished while others wait is finished
        on the next take (within :attr:`finish_delay`); meanwhile it is reported in
        ``status``, so that the manager finishes it if the worker dies first.
    :param block_timeout: how long one take waits for a job before the loop checks
        whether it should stop; bounds how late a stop request is noticed.
    :param parent_pid: stop when the parent process is no longer this pid (its manager
        died); ``None`` disables the check (threads, tests).
    :param failed_limits: the bounds of the failed-job registry, applied each time this
        worker fails a job.
    :param job_timeout: seconds a job may run (``None``: no limit); a job's
        ``meta["timeout"]`` overrides it.
    :param status: where to report to the manager the jobs in hand, their deadlines, and
        the jobs that succeeded and are not finished yet; it needs a slot per job in flight.
    :param clock: the monotonic clock batching and the held-jobs re-check go by (tests
        pass a fake one).
    :param burst: stop once a take finds nothing to do and the jobs in flight are over
        (as rq's and arq's burst mode does), instead of waiting for more: for scripts, and
        for tests (:func:`qw_core.testing.run_jobs`). Jobs delayed to a later time are left.
    :param queues: the named queues served after the worker's own list and its manager's
        queue, in strict priority order (``"default"``: the shared queue, which is what
        none means).
    :param result_ttl: seconds to keep what a target returns (see :mod:`qw_core.results`),
        or, when it returns ``None``, that its job succeeded (for :meth:`Broker.job_status`);
        ``0`` keeps nothing.
    :param recycling: when to stop warmly to be replaced (:mod:`qw_core.recycling`): then
        :attr:`recycled` says why once :meth:`run` returns.
    :param event_loop: the event loop an ``async def`` target's jobs run on: ``"auto"``
        (uvloop if installed), ``"asyncio"`` or ``"uvloop"`` (:mod:`qw_core.eventloops`).
    """

    #: Longest time, in seconds from its start, that a job which succeeded may stay held
    #: waiting to be finished with the next take. Quick jobs of one batch are thus all
    #: finished by a single round trip; a slow job, or a batch that has run this long, is
    #: finished at once. Until then the job is reported in ``status``: if the worker dies,
    #: its manager finishes it (without a manager, as in a thread, it runs again).
    #: Also how long a job may wait in its batch before the worker checks that it still
    #: holds it (a worker paused past its heartbeat TTL has been reaped meanwhile).
    finish_delay: float = 0.1

    def __init__(
        self,
        broker: Consumer,
        target: str | Callable[..., Any],
        *,
        manager: str,
        name: str | None = None,
        hook: pluggy.HookRelay | None = None,
        concurrency: int | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        block_timeout: float = 1.0,
        parent_pid: int | None = None,
        failed_limits: FailedLimits = DEFAULT_FAILED_LIMITS,
        job_timeout: float | None = None,
        status: JobStatus | None = None,
        clock: Callable[[], float] = time.monotonic,
        burst: bool = False,
        queues: Sequence[str] | None = None,
        result_ttl: float = DEFAULT_RESULT_TTL,
        recycling: Recycling | None = None,
        event_loop: str = DEFAULT_EVENT_LOOP,
    ) -> None:
        if prefetch < 1:
            raise ConfigurationError(f"prefetch must be at least 1, not {prefetch}")
        self.broker = broker
        self.hook = hook if hook is not None else make_plugin_manager().hook
        self.target = TargetLoader(self.hook).load(target)
        try:
            self.concurrency = slots_for(self.target, concurrency)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if status is not None and status.slots < self.concurrency:
            raise ConfigurationError(
                f"the status record has {status.slots} slots for {self.concurrency} jobs"
            )
        self.manager = check_manager_name(broker, manager)
        self.name = broker.check_name(name or f"{manager}.{os.getpid()}")
        self.queues = check_queues(broker, queues)
        self.event_loop = check_event_loop(event_loop)
        try:
            self.result_ttl = check_ttl(result_ttl)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.info = WorkerInfo(name=self.name, manager=self.manager, pid=os.getpid())
        self.prefetch = min(prefetch, broker.capabilities.max_take)
        self.block_timeout = block_timeout
        self.parent_pid = parent_pid
        self.failed_limits = failed_limits
        self.job_timeout = job_timeout
        self.status = status
        self.clock = clock
        self.burst = burst
        self.recycling = recycling or Recycling()
        #: Why the worker stopped to be replaced (see :mod:`qw_core.recycling`), or ``None``.
        self.recycled: str | None = None
        self._ran = 0  # jobs settled, for recycling
        self._runner = JobRunner(
            self.hook,
            self.target,
            self.info,
            status,
            job_timeout=job_timeout,
            kill_after=kill_after_for(self.target, self.concurrency),
        )
        self._executor: Executor | None = None
        self._free = list(range(self.concurrency - 1, -1, -1))  # free slots; the lowest is used first
        self._flights: dict[int, _Flight] = {}  # run number -> the job in flight
        self._runs = itertools.count(1)
        self._abandoned: set[int] = set()  # runs settled as timed out whose thread runs on
        self._alone: int | None = None  # the run of a suspect, which runs alone
        self._stop = threading.Event()
        self._backoff = Backoff()
        self._settled = False  # True once the loop ended holding nothing
        # Waking the loop from a take when a job completes (see _job_completed).
        self._wake_lock = threading.Lock()
        self._in_take = False
        self._nudged = False
        self._nudger: Consumer | None = None

    # -- control ---------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the jobs in flight, take nothing new, then return from :meth:`run`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or (self.parent_pid is not None and os.getppid() != self.parent_pid)

    # -- the loop --------------------------------------------------------------------

    def run(self) -> None:
        """Register, process jobs until asked to stop, then deregister.

        A worker that stops still holding jobs it could not settle (the broker was
        unreachable) stays registered, so that its manager or a reaper finds them.

        :raises WorkerNotStarted: a ``qw_worker_started`` plugin raised (no job was taken;
            the worker stays registered for its manager to settle).
        """
        try:
            self._patiently(
                lambda: self.broker.register_worker(manager=self.manager, worker=self.name),
                give_up=lambda: self.stopping,
            )
        except Exception:
            return
        try:
            self.hook.qw_worker_started(worker=self.info)
        except Exception as exc:
            raise WorkerNotStarted(f"a qw_worker_started plugin raised {type(exc).__name__}: {exc}") from exc
        if self.status is not None:
            self.status.ready()
        self._executor = make_executor(
            self._runner, self.concurrency, self._job_completed, event_loop=self.event_loop
        )
        try:
            self._loop(self._executor)
        finally:
            self._executor.close()
            if self._nudger is not None:
                self._nudger.close()
            settle.notify(self.hook.qw_worker_stopping, worker=self.info)
            if self._settled:
                try:
                    # Anything still on its list is a job it never saw (handed to it while a
                    # wait that failed left it registered, or taken by a take whose reply
                    # was lost) or one sent to it directly since: it goes back, as its
                    # manager would put it back. Nobody looks at a deregistered worker's
                    # list, and a worker whose manager is gone has nobody else to do it.
                    self.broker.recover_worker(manager=self.manager, worker=self.name)
                    self.broker.deregister_worker(manager=self.manager, worker=self.name)
                except Exception as exc:  # its manager (or a reaper) deregisters it
                    log.warning("worker %s could not deregister: %s", self.name, exc)

    def _loop(self, executor: Executor) -> None:
        batch = _Batch()
        completed = False  # the loop ended without an error: no job is left half-settled
        try:
            while True:
                self._settle(batch, executor.completed(0.0))
                self._time_out_overdue(executor)
                if self.stopping and not self._unsettled_flights():
                    break  # a thread whose job was settled as timed out is not waited for
                if not self.stopping and self._start_waiting(batch, executor):
                    continue
                if self.stopping or self._busy(batch):
                    self._finish_if_late(batch)
                    self._settle(batch, executor.completed(self._wait_time(batch, executor)))
                    continue
                self._take_batch(batch)
            completed = True
        finally:
            try:
                self._write_failures(batch, patiently=completed)  # else once: its manager has them
                if batch.finished:
                    self._finish(batch.finished)
                    self._settled_successes()
                if batch.waiting:
                    self.broker.release_jobs(worker=self.name, job_ids=[job.id for job in batch.waiting])
                self._settled = completed
            except Exception as exc:
                log.warning("worker %s stops holding jobs it could not settle: %s", self.name, exc)

    def _unsettled_flights(self) -> bool:
        """Whether a job in flight still has to be settled (not one timed out already)."""
        return any(run not in self._abandoned for run in self._flights)

    def _busy(self, batch: _Batch) -> bool:
        """Whether to wait for a job in flight to end rather than take: no slot is free, a
        suspect runs alone or waits to, or (burst) the queue is empty and jobs still run."""
        return (
            not self._free
            or self._alone is not None
            or bool(batch.waiting)
            or (self.burst and batch.drained and bool(self._flights))
            or self._budget() == 0
        )

    def _budget(self) -> int | None:
        """How many more jobs this worker may take before it is recycled (``None``: any)."""
        left = self.recycling.budget(self._ran)
        return None if left is None else max(0, left - len(self._flights))

    def _start_waiting(self, batch: _Batch, executor: Executor) -> bool:
        """Hand waiting jobs to the executor while slots are free; whether any started.

        A suspect waits until nothing else is in flight, then runs alone.
        """
        started = False
        while batch.waiting and self._free and self._alone is None:
            job = self._next_job(batch)
            if job is None:
                break
            if job.suspect and self._flights:
                batch.waiting.appendleft(job)
                break
            run, slot = next(self._runs), self._free.pop()
            limit = self._runner.time_limit(job) if executor.times_out_jobs else None
            due_at = time.monotonic() + limit if limit else 0.0
            self._flights[run] = _Flight(slot, job, self.clock(), due_at)
            if job.suspect:
                self._alone = run
            executor.submit(job, slot, run)
            started = True
        return started

    def _take_batch(self, batch: _Batch) -> None:
        """Finish what succeeded and take jobs for the free slots, in one broker call.

        With nothing in flight the take waits for a job. With jobs in flight it first
        takes without waiting; only if nothing came does it wait, and then a job of ours
        that completes ends the wait (:meth:`_job_completed`), so that its slot is filled
        at once: a wake-up costs a broker call, paid only when the queue is empty.
        """
        self._write_failures(batch)  # then the take finishes the batch's succeeded jobs
        batch.limit = self._next_limit(batch.limit, batch.size, self.clock() - batch.taken_at)
        limit = self._take_limit(batch, len(self._free))
        budget = self._budget()
        if budget is not None:
            limit = max(1, min(limit, budget))
        wait = 0.0 if self.burst else self.block_timeout
        if self._flights and wait:
            asked = self.clock()
            taken = self._take(batch.finished, limit, 0.0)
            if taken is None:
                return
            self._note_taken(batch, taken, asked, 0.0)
            if taken:
                return
        with self._wake_lock:  # from here a completing job ends the wait (_job_completed)
            pending = self._executor_pending()
            self._in_take = bool(wait) and not pending
            self._nudged = False
        if pending:  # a job completed meanwhile: settle it first
            return
        asked, timeout = self.clock(), self._until_a_deadline(wait)
        try:
            taken = self._take(batch.finished, limit, timeout)
        finally:
            with self._wake_lock:
                self._in_take = False
        if taken is not None:
            self._note_taken(batch, taken, asked, timeout)

    def _note_taken(self, batch: _Batch, taken: list[Job], asked: float, timeout: float) -> None:
        """Note what a take asked at ``asked`` with ``timeout`` gave, and that it finished
        ``batch.finished``.

        A take that answered later than its timeout allows was held up (the process was
        paused, or the broker stalled) at an unknown point, perhaps after the broker had
        handed it its jobs (a job handed off while the worker waits is taken as soon as it
        is queued, its reply read whenever the worker comes back): the jobs count as
        confirmed when it was asked, so that the first to start checks they are still held.
        """
        batch.waiting.extend(taken)
        batch.size = len(taken)
        now = self.clock()
        batch.taken_at = now
        batch.confirmed_at = asked if now - asked > timeout + self.finish_delay else now
        batch.finished = []
        batch.drained = not taken
        self._settled_successes()
        if not taken and self.burst and not self._flights:
            self.request_stop()

    def _executor_pending(self) -> bool:
        return self._executor is not None and self._executor.pending()

    def _job_completed(self) -> None:
        """A job of ours completed (called in the thread that ran it): if the loop waits in
        a take, end the wait, so that it settles the job and fills the slot at once."""
        with self._wake_lock:
            if not self._in_take or self._nudged:
                return
            self._nudged = True
            try:
                if self._nudger is None:
                    self._nudger = self.broker.factory()()
                self._nudger.nudge(self.name)
            except Exception as exc:  # the take ends at its timeout anyway
                log.warning("worker %s could not end its own wait for a job: %s", self.name, exc)

    def _wait_time(self, batch: _Batch, executor: Executor) -> float:
        """How long to wait for a job in flight to end: until a deferred finish is due or
        a job on a thread is overdue, at most ``block_timeout``."""
        wait = self.block_timeout
        if batch.finished or batch.failing:
            wait = min(wait, batch.deferred_since + self.finish_delay - self.clock())
        return self._until_a_deadline(wait)

    def _until_a_deadline(self, wait: float) -> float:
        """``wait``, cut short at the deadline of a job on a thread (which the loop times out)."""
        executor = self._executor
        if executor is not None and executor.times_out_jobs:
            now = time.monotonic()
            for run, flight in self._flights.items():
                deadline = executor.deadline(flight.slot) or flight.due_at  # not started yet: its earliest
                if deadline and run not in self._abandoned:
                    wait = min(wait, deadline - now)
        return max(0.0, wait)

    def _next_job(self, batch: _Batch) -> Job | None:
        """The next job of the batch; first, if they waited long, drop the jobs this worker
        no longer holds. ``None`` if none is left."""
        if self.clock() - batch.confirmed_at > self.finish_delay:
            batch.waiting = self._still_held(batch.waiting)
            batch.confirmed_at = self.clock()
        return batch.waiting.popleft() if batch.waiting else None

    # -- settling what completed -----------------------------------------------------

    def _settle(self, batch: _Batch, completions: list[Completion]) -> None:
        for done in completions:
            flight = self._flights.pop(done.run)
            if done.run == self._alone:
                self._alone = None
            batch.drained = False
            if done.run in self._abandoned:  # settled as timed out already; its thread came back
                self._abandoned.discard(done.run)
            elif done.error is None:
                self._succeeded(batch, done, flight.started)
            else:
                self._failed(done, batch=batch, started=flight.started)
            self._free.append(flight.slot)
            self._ran += 1
        if completions and self.recycling and self.recycled is None:
            self._recycle_if_due()

    def _recycle_if_due(self) -> None:
        """Stop warmly, to be replaced, once a recycling bound is reached (after a job)."""
        reason = self.recycling.reason(self._ran)
        if reason is None:
            return
        self.recycled = reason
        log.info("worker %s %s: exiting once the jobs in hand end, to be replaced", self.name, reason)
        self.request_stop()

    def _succeeded(self, batch: _Batch, done: Completion, started: float) -> None:
        """Keep the job to finish with the next take (one round trip for the batch), unless
        that would leave a finished job held for long: see :attr:`finish_delay`. A job that
        returned something is finished at once, with its result (see :meth:`_keep_result`).

        Only while jobs of the batch wait to start is the delay checked here (they run
        next, each perhaps long). Otherwise the loop's next turn either takes, and that
        take finishes the job, or waits for a job in flight, and checks the delay first
        (see :meth:`_loop`): a separate finish call there would be one more round trip
        for jobs the take a moment later finishes anyway."""
        status = self.status
        if done.result is not None and self.result_ttl > 0:
            self._keep_result(done)
        else:
            if not batch.finished and not batch.failing:
                batch.deferred_since = started
            batch.finished.append(done.job.id)
            if status is not None:  # its manager finishes it if we die first
                status.succeeded(done.job.id)
        settle.notify(
            self.hook.qw_job_finished,
            job=done.job,
            worker=self.info,
            outcome=Outcome.SUCCEEDED,
            duration=done.duration,
        )
        if status is not None:
            status.done(done.slot)
        if batch.waiting:
            self._finish_if_late(batch)

    def _keep_result(self, done: Completion) -> None:
        """Finish ``done``'s job and keep its result in one broker call, before anything
        says it succeeded: until that call worked the job counts as in hand, so if the
        worker dies first, the job runs again (and returns its result again) rather than
        being finished without it."""
        assert done.result is not None
        result = done.result
        try:
            self._patiently(
                lambda: self.broker.finish_with_result(
                    worker=self.name, job_id=done.job.id, result=result, ttl=self.result_ttl
                ),
                give_up=self._manager_gone,
            )
        except Exception as exc:  # the job stays held: its manager (or a reaper) puts it back
            log.warning("worker %s could not keep the result of job %s: %s", self.name, done.job.id, exc)
            raise

    def _failed(
        self,
        done: Completion,
        *,
        batch: _Batch | None = None,
        started: float = 0.0,
        release_slot: bool = True,
    ) -> None:
        """Carry out what the plugins decided for a job that raised (its slot is free
        after, unless ``release_slot`` is false: its thread runs on).

        A job failed for good is written to the failed registry with the others of its
        batch, in one broker call before the next take (or once it waited
        :attr:`finish_delay`), as succeeded jobs are finished: a flood of failing jobs then
        costs about what a flood of succeeding ones does. Meanwhile the status record
        reports it in hand, so if the worker dies, or cannot write it, its manager blames
        it as a job the worker died with. Retries, drops, and jobs this worker settles as
        timed out are carried out at once.
        """
        assert done.decision is not None
        assert done.failure is not None
        decision, failure = done.decision, done.failure
        if batch is not None and decision.action is Action.FAIL and self._defer_failure(batch, done, started):
            outcome = Outcome.FAILED
        else:
            outcome = self._apply(done.job, decision, failure)
        settle.notify(
            self.hook.qw_job_finished, job=done.job, worker=self.info, outcome=outcome, duration=done.duration
        )
        if self.status is not None and release_slot:
            self.status.done(done.slot)
        if batch is not None and batch.waiting:
            self._finish_if_late(batch)

    def _defer_failure(self, batch: _Batch, done: Completion, started: float) -> bool:
        """Keep ``done``'s failure to write with the batch's; ``False`` if the status record
        has no room to report it (then it is written at once)."""
        assert done.failure is not None
        if self.status is not None and not self.status.failing(done.job.id):
            return False
        if not batch.finished and not batch.failing:
            batch.deferred_since = started
        batch.failing.append((done.job, done.failure))
        return True

    def _apply(self, job: Job, decision: Decision, failure: Failure) -> Outcome:
        """Carry out ``decision`` for ``job`` now (see :func:`settle.apply`)."""
        return self._patiently(
            lambda: settle.apply(
                self.broker,
                worker=self.name,
                job=job,
                decision=decision,
                failure=failure,
                limits=self.failed_limits,
            ),
            give_up=self._manager_gone,
        )

    def _write_failures(self, batch: _Batch, *, patiently: bool = True) -> None:
        """Write the batch's deferred failures, in one broker call (see :meth:`_failed`);
        not ``patiently``: one try (the status record reports them to the manager anyway)."""
        if not batch.failing:
            return
        failing = list(batch.failing)

        def write() -> list[bool]:
            return self.broker.fail_jobs(worker=self.name, failures=failing, limits=self.failed_limits)

        if patiently:
            self._patiently(write, give_up=self._manager_gone)
        else:
            write()
        batch.failing = []
        if self.status is not None:
            self.status.failures_written()

    def _time_out_overdue(self, executor: Executor) -> None:
        """Settle as timed out each job on a thread past its deadline; its thread runs on
        (nothing can stop it), and what it does when it ends changes nothing."""
        if not executor.times_out_jobs or not self._flights:
            return
        now = time.monotonic()
        for run, flight in list(self._flights.items()):
            deadline = executor.deadline(flight.slot)
            if not deadline or deadline > now or run in self._abandoned:
                continue
            if not executor.abandon(run):  # ending right now: its completion settles it
                continue
            self._abandoned.add(run)
            job = flight.job
            limit = self._runner.time_limit(job) or 0.0
            log.warning(
                "worker %s: job %s ran past its %gs limit; settled as timed out, its thread runs on",
                self.name,
                job.id,
                limit,
            )
            error = JobTimeout(
                f"job {job.id} ran longer than its {limit:g}s limit; its thread was left running"
            )
            # Settled first, then marked abandoned: if settling fails for good, the job is
            # still in hand when the worker ends, and its manager counts it.
            self._failed(self._runner.complete(job, flight.slot, run, error, limit), release_slot=False)
            if self.status is not None:
                self.status.abandoned(flight.slot)

    def _finish_if_late(self, batch: _Batch) -> None:
        """Finish the batch's succeeded jobs and write its failures once the first of them
        waited :attr:`finish_delay`."""
        if (batch.finished or batch.failing) and self.clock() - batch.deferred_since >= self.finish_delay:
            self._write_failures(batch)
            if batch.finished:
                self._finish(batch.finished)
                batch.finished = []
                self._settled_successes()

    def _still_held(self, waiting: deque[Job]) -> deque[Job]:
        """The jobs of ``waiting`` this worker still holds (a reaper may have handed the
        others to other workers while this one was paused); on an error, all of them."""
        try:
            flags = self.broker.still_held(worker=self.name, job_ids=[job.id for job in waiting])
        except Exception as exc:  # cannot tell: run them (at least once beats never)
            log.warning("worker %s could not check its held jobs: %s", self.name, exc)
            return waiting
        gone = [job.id for job, held in zip(waiting, flags, strict=True) if not held]
        if gone:
            log.warning(
                "worker %s no longer holds %d job(s) it had taken (it was paused or cut off, and "
                "a reaper handed them on): not running them: %s",
                self.name,
                len(gone),
                ", ".join(gone),
            )
        return deque(job for job, held in zip(waiting, flags, strict=True) if held)

    def _settled_successes(self) -> None:
        if self.status is not None:
            self.status.settled()

    def _take_limit(self, batch: _Batch, free: int) -> int:
        """How many jobs a take asks for, with ``free`` slots.

        With nothing in flight: the free slots, or the batch's limit if more. With jobs in
        flight: the free slots, and the batch's extra (its limit less one) only if the jobs
        this take finishes ran quickly (the first of them started within
        :attr:`finish_delay`). Those extra jobs wait here and start as slots free, so the
        next take comes once they have, carrying as many again, instead of a take per job
        or two (each a transaction on some backends). Jobs that run longer would make the
        loop finish each success with a call of its own while others wait
        (:meth:`_finish_if_late`), and would be held from idle workers for long.
        """
        if not self._flights:
            return max(free, batch.limit)
        quick = bool(batch.finished) and self.clock() - batch.deferred_since < self.finish_delay
        return free + batch.limit - 1 if quick else free

    def _next_limit(self, limit: int, taken: int, elapsed: float) -> int:
        """How many jobs the next take asks for: 1 unless the queue is deep and jobs are quick.

        A batch saves a round trip per job, which matters only for quick jobs, and jobs
        held waiting cannot go to an idle worker, which matters only for slow ones. So
        after a full batch (``taken == limit``: the queue had more) that ran within
        :attr:`finish_delay` the limit doubles, up to :attr:`prefetch`; after a full batch
        that took longer it halves; after a short one (the queue ran dry) it is 1 again.
        With jobs in flight, see :meth:`_take_limit`.
        """
        if taken < limit:
            return 1
        if elapsed < self.finish_delay:
            return min(self.prefetch, 2 * limit)
        return max(1, limit // 2)

    # -- broker calls ----------------------------------------------------------------

    def _take(self, finished: list[str], limit: int, timeout: float) -> list[Job] | None:
        """Finish ``finished`` and take the next jobs; ``None`` if the broker did not answer.

        The jobs in flight are held: the broker must not hand them out again.
        """
        held = [flight.job.id for run, flight in self._flights.items() if run not in self._abandoned]
        try:
            jobs = self.broker.take(
                manager=self.manager,
                worker=self.name,
                finished=finished,
                held=held,
                limit=limit,
                timeout=timeout,
                queues=self.queues,
                keep_finished=self.result_ttl,
            )
        except Exception as exc:
            self._wait_out(exc)
            return None
        if self._backoff.failures:
            self._answered()
        return jobs

    def _finish(self, job_ids: list[str]) -> None:
        self._patiently(
            lambda: self.broker.finish_jobs(worker=self.name, job_ids=job_ids, keep_finished=self.result_ttl),
            give_up=self._manager_gone,
        )

    def _patiently(self, call: Callable[[], _T], *, give_up: Callable[[], bool]) -> _T:
        """``call()``, retried after a back-off until it works.

        An outage (:class:`BrokerUnavailable`) is retried until ``give_up()``; any other
        error is logged with its traceback and retried :data:`ERROR_ATTEMPTS` times at
        most, and not once ``give_up()`` or a stop request says so: it may never go away,
        and a worker that cannot settle a job must not hold it for ever. The caller's
        error then ends the worker, and its manager (or a reaper) puts back what it held,
        counting the job in hand as a crash, so such a job ends in the failed registry.

        :raises Exception: the last error, once the caller gave up.
        """
        errors = 0
        while True:
            try:
                result = call()
            except BrokerUnavailable as exc:
                if give_up():
                    raise
                self._wait_out(exc)
                continue
            except Exception as exc:
                errors += 1
                if errors >= ERROR_ATTEMPTS or give_up() or self.stopping:
                    raise
                self._wait_out(exc)
                continue
            if self._backoff.failures:
                self._answered()
            return result

    def _wait_out(self, exc: Exception) -> None:
        """Wait before trying the broker again (a stop request cuts the wait short).

        Once stopping, the wait is served in full: the calls still made then settle jobs
        that ran and go on through an outage, and the stop event, set already, would turn
        the back-off into a busy loop of broker calls for as long as the outage lasts.
        """
        if self._backoff.failures == 0:
            if isinstance(exc, BrokerUnavailable):
                log.warning("worker %s: %s; retrying", self.name, exc)
            else:
                log.error("worker %s: a broker call failed; retrying", self.name, exc_info=exc)
        wait = self._backoff.next()
        if self._stop.is_set():
            time.sleep(wait)
        else:
            self._stop.wait(wait)

    def _answered(self) -> None:
        log.info("worker %s: the broker answers again", self.name)
        self._backoff.reset()

    def _manager_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid
