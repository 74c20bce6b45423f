"""The worker loop: take → run → settle, until asked to stop.

One :class:`Worker` runs in each worker process (or thread). Each turn of the loop is
one broker call that finishes the job just completed and takes the next ones
(:meth:`Broker.take`), so a fast backend serves a job in one round trip.

Signals: a worker process ignores SIGINT (a Ctrl-C to the process group is for the
manager, which then stops workers warmly) and treats SIGTERM as "finish the current job,
take nothing new". It also stops if its manager process disappears, because recovery
will hand the jobs it would take to others.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pluggy

from qw_core.broker import Broker
from qw_core.errors import ConfigurationError
from qw_core.models import Action, Decision, Failure, Job, Outcome, WorkerInfo
from qw_core.plugins import make_plugin_manager
from qw_core.targets import TargetLoader

log = logging.getLogger("qw.worker")

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
    :param prefetch: how many jobs one take may hand over; ``1`` means none are held
        waiting. With more, a job finished while others of its batch wait is finished on
        the next take, so a crash in between runs it again (at-least-once).
    :param block_timeout: how long one take waits for a job before the loop checks
        whether it should stop; bounds how late a stop request is noticed.
    :param parent_pid: stop when the parent process is no longer this pid (its manager
        died); ``None`` disables the check (threads, tests).
    """

    def __init__(
        self,
        broker: Broker,
        target: str | Callable[..., Any],
        *,
        manager: str,
        name: str | None = None,
        hook: pluggy.HookRelay | None = None,
        prefetch: int = 1,
        block_timeout: float = 1.0,
        parent_pid: int | None = None,
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
        self._stop = threading.Event()

    # -- control ---------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the job in progress, take nothing new, then return from :meth:`run`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or (self.parent_pid is not None and os.getppid() != self.parent_pid)

    # -- the loop --------------------------------------------------------------------

    def run(self) -> None:
        """Register, process jobs until asked to stop, then deregister."""
        self.broker.register_worker(manager=self.manager, worker=self.name)
        self.hook.qw_worker_started(worker=self.info)
        try:
            self._loop()
        finally:
            self.hook.qw_worker_stopping(worker=self.info)
            self.broker.deregister_worker(manager=self.manager, worker=self.name)

    def _loop(self) -> None:
        waiting: deque[Job] = deque()  # taken, not started yet
        finished: list[str] = []  # succeeded, to finish with the next take
        try:
            while not self.stopping:
                if not waiting:
                    waiting.extend(self._take(finished))
                    finished = []
                    continue
                job = waiting.popleft()
                if self._run_one(job) is Outcome.SUCCEEDED:
                    finished.append(job.id)
                    if waiting:  # finish now: jobs still waiting would delay it
                        self._finish(finished)
                        finished = []
        finally:
            if finished:
                self._finish(finished)
            if waiting:
                self.broker.release_jobs(worker=self.name, job_ids=[job.id for job in waiting])

    def _take(self, finished: list[str]) -> list[Job]:
        return self.broker.take(
            manager=self.manager,
            worker=self.name,
            finished=finished,
            limit=self.prefetch,
            timeout=self.block_timeout,
        )

    def _finish(self, job_ids: list[str]) -> None:
        self.broker.finish_jobs(worker=self.name, job_ids=job_ids)

    # -- one job ---------------------------------------------------------------------

    def _run_one(self, job: Job) -> Outcome:
        """Run ``job`` through the hooks and settle a failure; return how it ended."""
        hook = self.hook
        hook.qw_job_started(job=job, worker=self.info)
        token = _current_job.set(job)
        start = time.perf_counter()
        try:
            hook.qw_job_run(job=job, worker=self.info, target=self.target)
        except Exception as exc:
            duration = time.perf_counter() - start
            outcome = self._settle_failure(job, exc)
        else:
            duration = time.perf_counter() - start
            outcome = Outcome.SUCCEEDED
            hook.qw_job_succeeded(job=job, worker=self.info, duration=duration)
        finally:
            _current_job.reset(token)
        hook.qw_job_finished(job=job, worker=self.info, outcome=outcome, duration=duration)
        return outcome

    def _settle_failure(self, job: Job, exc: Exception) -> Outcome:
        failure = Failure.from_exception(exc, worker=self.name)
        decision: Decision | None = self.hook.qw_job_failed(
            job=job, worker=self.info, exc=exc, failure=failure
        )
        if decision is None:  # every failure plugin blocked: keep the job, never drop it
            decision = Decision.fail()
        if decision.action is Action.RETRY:
            self.broker.retry_job(worker=self.name, job=job, delay=decision.delay)
            return Outcome.RETRIED
        if decision.action is Action.DROP:
            self._finish([job.id])
            return Outcome.DROPPED
        self.broker.fail_job(worker=self.name, job=job, failure=failure)
        return Outcome.FAILED
