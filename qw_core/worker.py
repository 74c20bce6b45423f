"""The worker loop: take → run → settle, until asked to stop.

One :class:`Worker` runs in each worker process (or thread). Each turn of the loop is
one broker call that finishes the job just completed and takes the next ones
(:meth:`Broker.take`), so a fast backend serves a job in one round trip.

Signals: a worker process ignores SIGINT (a Ctrl-C to the process group is for the
manager, which then stops workers warmly) and treats SIGTERM as "finish the current job,
take nothing new". It also stops if its manager process disappears, because recovery
will hand the jobs it would take to others.

Broker outages: a call that fails with :class:`~qw_core.errors.BrokerUnavailable` is
retried after a capped, jittered back-off (:mod:`qw_core.backoff`), logging once per
outage, so a Redis restart or failover pauses the worker instead of killing it. A take
gives up when the worker is asked to stop; settling a job that ran (finish, fail, retry)
keeps trying until it works or the manager is gone (what stays held is recovered).

Time limits: before calling the target the worker writes the job id and its deadline to
the shared record its manager reads (:mod:`qw_core.status`), two memory writes per job;
the manager kills a worker whose job overruns.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import pluggy

from qw_core.backoff import Backoff
from qw_core.broker import Broker
from qw_core.errors import BrokerUnavailable, ConfigurationError
from qw_core.models import Action, Decision, Failure, Job, Outcome, WorkerInfo
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

_current_job: contextvars.ContextVar[Job | None] = contextvars.ContextVar("qw_current_job", default=None)


def current_job() -> Job | None:
    """The job the calling code is running inside, or ``None`` outside a job.

    Lets a target read what ``target(job_id, job_data)`` does not carry, such as
    ``current_job().attempt``.
    """
    return _current_job.get()


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
    """

    #: Longest time, in seconds from its start, that a job which succeeded may stay held
    #: waiting to be finished with the next take. Quick jobs of one batch are thus all
    #: finished by a single round trip; a slow job, or a batch that has run this long, is
    #: finished at once. Until then the job is reported in ``status``: if the worker dies,
    #: its manager finishes it (without a manager, as in a thread, it runs again).
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
        self._stop = threading.Event()
        self._backoff = Backoff()
        self._settled = True  # False when the loop ended holding jobs it could not settle

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
        """
        try:
            self._patiently(
                lambda: self.broker.register_worker(manager=self.manager, worker=self.name),
                give_up=lambda: self.stopping,
            )
        except BrokerUnavailable:
            return
        self.hook.qw_worker_started(worker=self.info)
        try:
            self._loop()
        finally:
            self.hook.qw_worker_stopping(worker=self.info)
            if self._settled:
                try:
                    self.broker.deregister_worker(manager=self.manager, worker=self.name)
                except BrokerUnavailable as exc:
                    log.warning("worker %s could not deregister: %s", self.name, exc)

    def _patiently(self, call: Callable[[], _T], *, give_up: Callable[[], bool]) -> _T:
        """``call()``, retried after a back-off while the broker is unreachable.

        :raises BrokerUnavailable: once ``give_up()`` says so after a failure.
        """
        while True:
            try:
                result = call()
            except BrokerUnavailable as exc:
                if give_up():
                    raise
                self._wait_out(exc)
                continue
            if self._backoff.failures:
                self._answered()
            return result

    def _wait_out(self, exc: BrokerUnavailable) -> None:
        """Wait before trying the broker again (a stop request cuts the wait short)."""
        if self._backoff.failures == 0:
            log.warning("worker %s: %s; retrying", self.name, exc)
        self._stop.wait(self._backoff.next())

    def _answered(self) -> None:
        log.info("worker %s: the broker answers again", self.name)
        self._backoff.reset()

    def _manager_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def _loop(self) -> None:
        waiting: deque[Job] = deque()  # taken, not started yet
        finished: list[str] = []  # succeeded, to finish with the next take
        deferred_since = 0.0  # when the first job in `finished` started
        limit, batch, batch_at = 1, 0, 0.0  # the last take's limit, what it gave, when
        try:
            while not self.stopping:
                if not waiting:
                    limit = self._next_limit(limit, batch, time.monotonic() - batch_at)
                    taken = self._take(finished, limit)
                    if taken is None:  # the broker was unreachable: `finished` is still held
                        continue
                    waiting.extend(taken)
                    batch, batch_at = len(taken), time.monotonic()
                    finished = []
                    self._settled_successes()
                    continue
                job = waiting.popleft()
                started = time.monotonic()
                if self._run_one(job) is Outcome.SUCCEEDED:
                    if not finished:
                        deferred_since = started
                    finished.append(job.id)
                    if self.status is not None:  # its manager finishes it if we die first
                        self.status.succeeded(job.id)
                    # Settle with the next take (one round trip for the batch) unless
                    # that would leave a finished job held for long: see finish_delay.
                    if waiting and time.monotonic() - deferred_since >= self.finish_delay:
                        self._finish(finished)
                        finished = []
                        self._settled_successes()
        finally:
            try:
                if finished:
                    self._finish(finished)
                if waiting:
                    self.broker.release_jobs(worker=self.name, job_ids=[job.id for job in waiting])
            except BrokerUnavailable as exc:
                self._settled = False
                log.warning("worker %s stops holding jobs it could not settle: %s", self.name, exc)

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
        """Finish ``finished`` and take the next jobs; ``None`` if the broker was unreachable."""
        try:
            jobs = self.broker.take(
                manager=self.manager,
                worker=self.name,
                finished=finished,
                limit=limit,
                timeout=self.block_timeout,
            )
        except BrokerUnavailable as exc:
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
        """Run ``job`` through the hooks and settle a failure; return how it ended."""
        hook = self.hook
        status = self.status
        if status is not None:
            status.began(job.id)
        # A hook nobody implements (started and succeeded, by default) is not called at
        # all: a pluggy call costs a few microseconds even with nothing to call.
        if hook.qw_job_started.get_hookimpls():
            hook.qw_job_started(job=job, worker=self.info)
        token = _current_job.set(job)
        if status is not None:
            status.started(self._time_limit(job))
        start = time.perf_counter()
        try:
            hook.qw_job_run(job=job, worker=self.info, target=self.target)
        except Exception as exc:
            duration = time.perf_counter() - start
            if status is not None:
                status.ended()
            outcome = self._settle_failure(job, exc)
        else:
            duration = time.perf_counter() - start
            if status is not None:
                status.ended()
            outcome = Outcome.SUCCEEDED
            if hook.qw_job_succeeded.get_hookimpls():
                hook.qw_job_succeeded(job=job, worker=self.info, duration=duration)
        finally:
            if status is not None:
                status.ended()
            _current_job.reset(token)
        hook.qw_job_finished(job=job, worker=self.info, outcome=outcome, duration=duration)
        if status is not None:
            status.done()
        return outcome

    def _settle_failure(self, job: Job, exc: Exception) -> Outcome:
        failure = Failure.from_exception(exc, worker=self.name)
        decision: Decision | None = self.hook.qw_job_failed(
            job=job, worker=self.info, exc=exc, failure=failure
        )
        if decision is None:  # every failure plugin blocked: keep the job, never drop it
            decision = Decision.fail()
        if decision.action is Action.RETRY:
            self._patiently(
                lambda: self.broker.retry_job(worker=self.name, job=job, delay=decision.delay),
                give_up=self._manager_gone,
            )
            return Outcome.RETRIED
        if decision.action is Action.DROP:
            self._finish([job.id])
            return Outcome.DROPPED
        self._patiently(
            lambda: self.broker.fail_job(
                worker=self.name, job=job, failure=failure, limits=self.failed_limits
            ),
            give_up=self._manager_gone,
        )
        return Outcome.FAILED

    def _time_limit(self, job: Job) -> float | None:
        """Seconds ``job`` may run: its ``meta["timeout"]`` if a positive number, else the default."""
        limit = job.meta.get(TIMEOUT_META) if job.meta else None
        if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
            return float(limit)
        return self.job_timeout
