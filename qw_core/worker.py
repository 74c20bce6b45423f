"""The worker loop: take → run → settle, until asked to stop.

One :class:`Worker` runs in each worker process (or thread). Each turn of the loop is
one broker call that finishes the job just completed and takes the next ones
(:meth:`Broker.take`), so a fast backend serves a job in one round trip.

Signals: a worker process ignores SIGINT and SIGQUIT (a Ctrl-C or Ctrl-\\ to the process
group is for the manager, which then stops workers warmly or cold) and treats SIGTERM as
"finish the current job, take nothing new". It also stops if its manager process disappears, because recovery
will hand the jobs it would take to others.

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
and drops the others: only the job it had in hand when it stopped can run twice.

Time limits: before calling the target the worker writes the job id and its deadline to
the shared record its manager reads (:mod:`qw_core.status`), two memory writes per job;
the manager kills a worker whose job overruns.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import pluggy

from qw_core import settle
from qw_core.backoff import Backoff
from qw_core.broker import Broker
from qw_core.errors import BrokerUnavailable, ConfigurationError, QwError
from qw_core.models import Failure, Job, Outcome, WorkerInfo
from qw_core.plugins import make_plugin_manager
from qw_core.policy import DEFAULT_FAILED_LIMITS, TIMEOUT_META, FailedLimits
from qw_core.status import JobStatus
from qw_core.targets import TargetLoader

log = logging.getLogger("qw.worker")

_T = TypeVar("_T")

#: How many jobs a worker may take at once unless told otherwise (``qw run --prefetch``).
#: It takes more than one only while the queue is deep and jobs are quick (see
#: :meth:`Worker._next_limit`), so a batch never keeps slow jobs from idle workers.
DEFAULT_PREFETCH = 32

#: How often a broker call that settles a job is tried when it fails with an error that
#: is not an outage (see :meth:`Worker._patiently`).
ERROR_ATTEMPTS = 5

_current_job: contextvars.ContextVar[Job | None] = contextvars.ContextVar("qw_current_job", default=None)


def current_job() -> Job | None:
    """The job the calling code is running inside, or ``None`` outside a job.

    Lets a target read what ``target(job_id, job_data)`` does not carry, such as
    ``current_job().attempt``.
    """
    return _current_job.get()


@attrs.define
class _Batch:
    """What a worker's last take gave it, and how it is getting on with it.

    :param waiting: jobs taken and not started yet.
    :param finished: jobs that succeeded, to finish with the next take.
    :param deferred_since: when the first job in ``finished`` started.
    :param limit: how many jobs the last take asked for.
    :param size: how many it got.
    :param taken_at: when.
    :param confirmed_at: when the broker last said this worker holds ``waiting``.
    """

    waiting: deque[Job] = attrs.field(factory=deque)
    finished: list[str] = attrs.field(factory=list)
    deferred_since: float = 0.0
    limit: int = 1
    size: int = 0
    taken_at: float = 0.0
    confirmed_at: float = 0.0


class WorkerNotStarted(QwError):
    """A ``qw_worker_started`` plugin raised: the worker did not take any job."""


class Worker:
    """Takes jobs for one worker name and runs them through the job hooks.

    :param broker: the broker this worker alone uses.
    :param target: the callable (or target string) every job is handed to.
    :param manager: the manager this worker belongs to.
    :param name: the worker's name; defaults to ``<manager>.<pid>``.
    :param hook: the plugin manager's hook relay; defaults to a fresh default one.
    :param prefetch: the most jobs one take may hand over; ``1`` means none are held
        waiting. Batches grow only while the queue is deep and jobs are quick (see
        :meth:`_next_limit`). A job finished while others of its batch wait is finished on
        the next take (within :attr:`finish_delay`); meanwhile it is reported in
        ``status``, so that the manager finishes it if the worker dies first.
    :param block_timeout: how long one take waits for a job before the loop checks
        whether it should stop; bounds how late a stop request is noticed.
    :param parent_pid: stop when the parent process is no longer this pid (its manager
        died); ``None`` disables the check (threads, tests).
    :param failed_limits: the bounds of the failed-job registry, applied each time this
        worker fails a job.
    :param job_timeout: seconds a job may run (``None``: no limit); a job's
        ``meta["timeout"]`` overrides it. Enforced by the manager, which reads ``status``.
    :param status: where to report to the manager the job in hand, its deadline, and the
        jobs that succeeded and are not finished yet.
    :param clock: the monotonic clock batching and the held-jobs re-check go by (tests
        pass a fake one).
    :param burst: stop once a take finds nothing to do (as rq's and arq's burst mode
        does), instead of waiting for more: for scripts, and for tests
        (:func:`qw_core.testing.run_jobs`). Jobs delayed to a later time are left.
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
        broker: Broker,
        target: str | Callable[..., Any],
        *,
        manager: str,
        name: str | None = None,
        hook: pluggy.HookRelay | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        block_timeout: float = 1.0,
        parent_pid: int | None = None,
        failed_limits: FailedLimits = DEFAULT_FAILED_LIMITS,
        job_timeout: float | None = None,
        status: JobStatus | None = None,
        clock: Callable[[], float] = time.monotonic,
        burst: bool = False,
    ) -> None:
        if prefetch < 1:
            raise ConfigurationError(f"prefetch must be at least 1, not {prefetch}")
        self.broker = broker
        self.hook = hook if hook is not None else make_plugin_manager().hook
        self.target = TargetLoader(self.hook).load(target)
        self.manager = broker.check_name(manager)
        self.name = broker.check_name(name or f"{manager}.{os.getpid()}")
        self.info = WorkerInfo(name=self.name, manager=self.manager, pid=os.getpid())
        self.prefetch = min(prefetch, broker.capabilities.max_take)
        self.block_timeout = block_timeout
        self.parent_pid = parent_pid
        self.failed_limits = failed_limits
        self.job_timeout = job_timeout
        self.status = status
        self.clock = clock
        self.burst = burst
        self._pid = os.getpid()  # a process the target forks has another one
        self._stop = threading.Event()
        self._backoff = Backoff()
        self._settled = False  # True once the loop ended holding nothing

    # -- control ---------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the job in progress, take nothing new, then return from :meth:`run`."""
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
        try:
            self._loop()
        finally:
            settle.notify(self.hook.qw_worker_stopping, worker=self.info)
            if self._settled:
                try:
                    self.broker.deregister_worker(manager=self.manager, worker=self.name)
                except Exception as exc:  # its manager (or a reaper) deregisters it
                    log.warning("worker %s could not deregister: %s", self.name, exc)

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
        """Wait before trying the broker again (a stop request cuts the wait short)."""
        if self._backoff.failures == 0:
            if isinstance(exc, BrokerUnavailable):
                log.warning("worker %s: %s; retrying", self.name, exc)
            else:
                log.error("worker %s: a broker call failed; retrying", self.name, exc_info=exc)
        self._stop.wait(self._backoff.next())

    def _answered(self) -> None:
        log.info("worker %s: the broker answers again", self.name)
        self._backoff.reset()

    def _manager_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def _loop(self) -> None:
        batch = _Batch()
        completed = False  # the loop ended without an error: no job is left half-settled
        try:
            while not self.stopping:
                if not batch.waiting:
                    self._take_batch(batch)
                    continue
                job = self._next_job(batch)
                if job is None:
                    continue
                started = self.clock()
                if self._run_one(job) is Outcome.SUCCEEDED:
                    self._succeeded(batch, job, started)
            completed = True
        finally:
            try:
                if batch.finished:
                    self._finish(batch.finished)
                if batch.waiting:
                    self.broker.release_jobs(worker=self.name, job_ids=[job.id for job in batch.waiting])
                self._settled = completed
            except Exception as exc:
                log.warning("worker %s stops holding jobs it could not settle: %s", self.name, exc)

    def _take_batch(self, batch: _Batch) -> None:
        """Finish what succeeded and take the next batch, in one broker call."""
        clock = self.clock
        batch.limit = self._next_limit(batch.limit, batch.size, clock() - batch.taken_at)
        taken = self._take(batch.finished, batch.limit)
        if taken is None:  # the broker did not answer: `finished` is still held
            return
        if not taken and self.burst:
            self.request_stop()
        batch.waiting.extend(taken)
        batch.size = len(taken)
        batch.taken_at = batch.confirmed_at = clock()
        batch.finished = []
        self._settled_successes()

    def _next_job(self, batch: _Batch) -> Job | None:
        """The next job of the batch; first, if they waited long, drop the jobs this worker
        no longer holds. ``None`` if none is left."""
        if self.clock() - batch.confirmed_at > self.finish_delay:
            batch.waiting = self._still_held(batch.waiting)
            batch.confirmed_at = self.clock()
        return batch.waiting.popleft() if batch.waiting else None

    def _succeeded(self, batch: _Batch, job: Job, started: float) -> None:
        """Keep ``job`` to finish with the next take (one round trip for the batch), unless
        that would leave a finished job held for long: see :attr:`finish_delay`."""
        if not batch.finished:
            batch.deferred_since = started
        batch.finished.append(job.id)
        if self.status is not None:  # its manager finishes it if we die first
            self.status.succeeded(job.id)
        if batch.waiting and self.clock() - batch.deferred_since >= self.finish_delay:
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

    def _next_limit(self, limit: int, taken: int, elapsed: float) -> int:
        """How many jobs the next take asks for: 1 unless the queue is deep and jobs are quick.

        A batch saves a round trip per job, which matters only for quick jobs, and jobs
        held waiting cannot go to an idle worker, which matters only for slow ones. So
        after a full batch (``taken == limit``: the queue had more) that ran within
        :attr:`finish_delay` the limit doubles, up to :attr:`prefetch`; after a full batch
        that took longer it halves; after a short one (the queue ran dry) it is 1 again.
        """
        if taken < limit:
            return 1
        if elapsed < self.finish_delay:
            return min(self.prefetch, 2 * limit)
        return max(1, limit // 2)

    def _take(self, finished: list[str], limit: int) -> list[Job] | None:
        """Finish ``finished`` and take the next jobs; ``None`` if the broker did not answer."""
        try:
            jobs = self.broker.take(
                manager=self.manager,
                worker=self.name,
                finished=finished,
                limit=limit,
                timeout=0.0 if self.burst else self.block_timeout,
            )
        except Exception as exc:
            self._wait_out(exc)
            return None
        if self._backoff.failures:
            self._answered()
        return jobs

    def _finish(self, job_ids: list[str]) -> None:
        self._patiently(
            lambda: self.broker.finish_jobs(worker=self.name, job_ids=job_ids), give_up=self._manager_gone
        )

    # -- one job ---------------------------------------------------------------------

    def _run_one(self, job: Job) -> Outcome:
        """Run ``job`` through the hooks and settle a failure; return how it ended.

        A ``qw_job_started`` plugin that raises fails the job (it did not run); one of the
        notifications after the run is logged and changes nothing.
        """
        hook = self.hook
        status = self.status
        if status is not None:
            status.began(job.id)
        token = _current_job.set(job)
        error: BaseException | None = None
        start = time.perf_counter()
        try:
            if hook.qw_job_started.get_hookimpls():
                hook.qw_job_started(job=job, worker=self.info)
            if status is not None:
                status.started(self._time_limit(job))
            start = time.perf_counter()
            hook.qw_job_run(job=job, worker=self.info, target=self.target)
        except BaseException as exc:  # SystemExit from a target fails its job like any error
            error = exc
        duration = time.perf_counter() - start
        if os.getpid() != self._pid:
            self._exit_forked_child(job, error)
        if status is not None:
            status.ended()
        _current_job.reset(token)
        if error is None:
            outcome = Outcome.SUCCEEDED
            settle.notify(hook.qw_job_succeeded, job=job, worker=self.info, duration=duration)
        else:
            outcome = self._settle_failure(job, error)
        settle.notify(hook.qw_job_finished, job=job, worker=self.info, outcome=outcome, duration=duration)
        if status is not None:
            status.done()
        return outcome

    def _exit_forked_child(self, job: Job, error: BaseException | None) -> None:
        """End a process that job's target forked and that came back into qw.

        Only the worker itself may settle the job: a child going on from here would run
        the worker's loop a second time under its name.
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

    def _settle_failure(self, job: Job, exc: BaseException) -> Outcome:
        failure = Failure.from_exception(exc, worker=self.name)
        decision = settle.decide(self.hook, job, self.info, exc, failure)
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

    def _time_limit(self, job: Job) -> float | None:
        """Seconds ``job`` may run: its ``meta["timeout"]`` if a positive number, else the default."""
        limit = job.meta.get(TIMEOUT_META) if job.meta else None
        if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
            return float(limit)
        return self.job_timeout
