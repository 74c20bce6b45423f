"""The manager: a process manager that keeps N worker processes running.

It starts the workers, registers itself once they are started, replaces a worker that
dies (putting the jobs it held back first, and backing off so a crash loop does not
spin), and on request stops them: warm (each finishes its current job) and, after an
optional grace period or a second request, cold (killed, their jobs put back).

The manager never runs jobs itself, so a target that hangs or hogs the GIL cannot stop
it from supervising. Its supervisor thread starts, replaces and stops workers, and
enforces job time limits: each worker reports the job it runs and its deadline in shared
memory (:mod:`qw_core.status`), and a worker whose job overran is killed, the job failed
(kind ``"timeout"``) and the worker replaced. Two more threads (:mod:`qw_core.liveness`)
keep a heartbeat for the manager and its running workers and run the reaper, which puts
back the jobs of workers whose heartbeat lapsed, wherever their manager was. ``stop()``
and signal handlers only wake the supervisor through a pipe.

A worker process only starts taking jobs once the manager has written its first
heartbeat, so no reaper can ever take a new worker for a dead one.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import attrs

from qw_core.backoff import Backoff
from qw_core.broker import Broker, BrokerFactory, Reaped
from qw_core.errors import BrokerUnavailable, ConfigurationError, JobTimeout, QwError
from qw_core.liveness import (
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_RECOVERIES,
    DEFAULT_TTL,
    Liveness,
    LivenessSettings,
    process_working,
)
from qw_core.models import Action, Decision, Failure, ManagerInfo, Outcome, WorkerInfo
from qw_core.plugins import PluginConfig, make_plugin_manager
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.process import EXIT_CANNOT_START, WorkerSpec, worker_main
from qw_core.status import JobStatus, Running
from qw_core.targets import TargetLoader
from qw_core.worker import DEFAULT_PREFETCH

log = logging.getLogger("qw.manager")

#: A worker that lived at least this long resets its slot's restart back-off.
HEALTHY_RUN_SECONDS = 10.0
#: Longest the supervisor sleeps while a job may be running under a time limit: how late
#: past its deadline a job can be killed.
TIMEOUT_TICK = 0.25


@attrs.define
class _Slot:
    """One worker position: the process filling it and its restart back-off."""

    process: BaseProcess | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    status: JobStatus | None = None  # what its worker runs, shared with it
    name: str = ""  # its worker's name
    token: str = ""  # its worker's heartbeat token
    go: Any = None  # the event its worker waits for (kept: with spawn, the child opens it late)

    @property
    def worker_pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Manager:
    """Starts and supervises worker processes that call ``target(job_id, job_data)``.

    :param target: a callable or a target string (``"pkg.module:func"``); a string is
        loaded here once to fail early, and again in each worker.
    :param broker: a broker, or a factory opening one; workers open theirs through
        :meth:`Broker.factory`.
    :param num_workers: worker processes to run; defaults to the CPU count.
    :param name: the manager's name; defaults to the host name.
    :param plugins: which plugins the manager and each worker load, and their settings
        (the retry policy among them).
    :param prefetch: how many jobs a worker may take at once (see :class:`~qw_core.worker.Worker`).
    :param block_timeout: how long an idle worker blocks in the broker per wait.
    :param grace: seconds a warm stop waits for running jobs before killing the workers
        and putting their jobs back; ``None`` waits as long as the jobs take.
    :param restart_backoff: (first, cap) seconds before restarting a worker that keeps dying.
    :param start_method: the multiprocessing start method; defaults to ``fork`` where it
        exists (so scripts without a ``__main__`` guard work, as with the original qw).
    :param failed_limits: the bounds of the failed-job registry, applied by the workers
        each time they fail a job.
    :param heartbeat: seconds between two heartbeats of the manager and its workers.
    :param heartbeat_ttl: seconds a heartbeat lasts: a worker (or manager) without one
        for this long is presumed dead, and a reaper puts its jobs back.
    :param reap_interval: seconds between two runs of the reaper (one manager's reaper
        works per interval); ``None``: the heartbeat interval.
    :param max_recoveries: how often a job may be put back after its worker died holding
        it; once more and it goes to the failed registry (kind ``"crashed"``) instead.
        ``None``: no limit.
    :param job_timeout: seconds a job may run before its worker is killed and the job
        failed (kind ``"timeout"``); ``None``: no limit. A job's own ``meta["timeout"]``
        (seconds) overrides it.
    """

    def __init__(
        self,
        target: str | Callable[..., Any],
        broker: Broker | BrokerFactory,
        *,
        num_workers: int | None = None,
        name: str | None = None,
        plugins: PluginConfig | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        block_timeout: float = 1.0,
        grace: float | None = None,
        restart_backoff: tuple[float, float] = (0.1, 10.0),
        start_method: str | None = None,
        failed_limits: FailedLimits = DEFAULT_FAILED_LIMITS,
        heartbeat: float = DEFAULT_HEARTBEAT,
        heartbeat_ttl: float = DEFAULT_TTL,
        reap_interval: float | None = None,
        max_recoveries: int | None = DEFAULT_MAX_RECOVERIES,
        job_timeout: float | None = None,
    ) -> None:
        if job_timeout is not None and not job_timeout > 0:
            raise ConfigurationError(f"the job timeout must be positive, not {job_timeout!r}")
        self._liveness = LivenessSettings(
            heartbeat=heartbeat, ttl=heartbeat_ttl, reap_interval=reap_interval, max_recoveries=max_recoveries
        )
        if num_workers is None:
            num_workers = os.cpu_count() or 1
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ConfigurationError(f"the number of workers must be a positive integer, not {num_workers!r}")
        self._plugins = plugins or PluginConfig()
        self._pm = make_plugin_manager(self._plugins)
        TargetLoader(self._pm.hook).load(target)  # fail here, not in N workers
        self._broker = broker if isinstance(broker, Broker) else broker()
        self.name = self._broker.check_name(name or socket.gethostname())
        self.num_workers = num_workers
        self.grace = grace
        self.restart_backoff = restart_backoff
        self.info = ManagerInfo(name=self.name, num_workers=num_workers, backend=self._broker.describe())
        self._spec = WorkerSpec(
            target=target,
            broker_factory=self._broker.factory(),
            manager=self.name,
            plugins=self._plugins,
            prefetch=prefetch,
            block_timeout=block_timeout,
            log_level=logging.getLogger().getEffectiveLevel(),
            failed_limits=failed_limits,
            job_timeout=job_timeout,
        )
        if start_method is None:
            start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._ctx = multiprocessing.get_context(start_method)
        self._slots = [_Slot(status=JobStatus(self._ctx)) for _ in range(num_workers)]
        self._token = secrets.token_hex(8)  # this start of the manager
        self._spawned = 0
        self._live: Liveness | None = None
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._stop_requested = threading.Event()
        self._cold = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    # -- public API (the original's start/stop/join, plus run) -----------------------

    def start(self) -> None:
        """Start the workers, register the manager, and supervise in a background thread."""
        if self._thread is not None:
            raise QwError(f"manager {self.name} was already started")
        self._pm.hook.qw_manager_starting(manager=self.info, broker=self._broker)
        for warning in self._broker.setup_warnings():
            log.warning("manager %s: %s", self.name, warning)
        # Registered, with a heartbeat, before any worker can hold a job: a reaper finds
        # the workers of a manager that dies from here on.
        previous = self._broker.beat(manager=self.name, token=self._token, workers={}, ttl=self._liveness.ttl)
        if previous.get(self.name) is not None:
            log.warning(
                "manager %s: another start of a manager with this name beat less than %gs ago (one "
                "that just died, or one running elsewhere: names must be unique)",
                self.name,
                self._liveness.ttl,
            )
        self._live = Liveness(
            self._broker.factory(),
            manager=self.name,
            token=self._token,
            settings=self._liveness,
            workers=self._running_workers,
            on_reaped=self._on_reaped,
        )
        for slot in self._slots:
            self._spawn(slot)
        try:
            self._broker.register_manager(self.name)
        except BaseException:
            for slot in self._slots:  # do not leave workers behind without a manager
                if slot.process is not None:
                    slot.process.kill()
                    slot.process.join()
            raise
        self._live.start()
        self._pm.hook.qw_manager_started(manager=self.info)
        self._thread = threading.Thread(target=self._supervise, name=f"qw-manager-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, *, cold: bool = False) -> None:
        """Ask the workers to stop; ``cold`` kills them now and puts their jobs back.

        Returns at once; :meth:`join` waits for the stop to complete.
        """
        if cold:
            self._cold.set()
        self._stop_requested.set()
        self._wake_w.send_bytes(b"stop")

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the manager has stopped; return whether it has."""
        return self._stopped.wait(timeout)

    def run(self) -> int:
        """Start, stop on SIGTERM/SIGINT/SIGHUP, and return an exit code (0: clean stop).

        The first signal stops warmly; a second SIGINT, or SIGQUIT, stops cold. Must be
        called from the main thread (where Python delivers signals).
        """
        with self.stopping_on_signals():
            self.start()
            while not self.join(timeout=0.5):  # short waits keep the main thread responsive to signals
                pass
        return 1 if self.error else 0

    @contextlib.contextmanager
    def stopping_on_signals(self) -> Iterator[None]:
        """Within the block, SIGTERM/SIGINT/SIGHUP stop warmly; a second SIGINT or SIGQUIT, cold.

        Restores the previous handlers afterwards. Main thread only.
        """
        requests = 0

        def on_signal(signum: int, frame: FrameType | None) -> None:
            nonlocal requests
            requests += 1
            cold = signum == signal.SIGQUIT or (signum == signal.SIGINT and requests > 1)
            log.info(
                "manager %s got %s: stopping %s",
                self.name,
                signal.Signals(signum).name,
                "now" if cold else "after running jobs",
            )
            self.stop(cold=cold)

        signums = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
        previous = {signum: signal.signal(signum, on_signal) for signum in signums}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- supervision (supervisor thread only) ----------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        """Start a worker in ``slot``; let it take jobs once its first heartbeat is written."""
        assert slot.status is not None
        slot.status.reset()
        slot.go = go = self._ctx.Event()  # a new one each time: a killed worker may leave one locked
        process = self._ctx.Process(  # type: ignore[attr-defined]  # typeshed's BaseContext lacks Process
            target=worker_main,
            args=(self._spec, os.getpid(), slot.status, go),
            name=f"qw-worker-{self.name}",
            daemon=False,
        )
        process.start()
        self._spawned += 1
        slot.process, slot.started_at, slot.restart_at = process, time.monotonic(), None
        slot.name, slot.token = f"{self.name}.{process.pid}", f"{self._token}.{self._spawned}"
        try:
            self._broker.beat(
                manager=self.name, token=self._token, workers={slot.name: slot.token}, ttl=self._liveness.ttl
            )
        except BrokerUnavailable as exc:  # it waits in its own back-off; the heartbeat thread catches up
            self._trouble(f"the first heartbeat of worker {slot.name}", exc)
        go.set()

    def _no_heartbeat_in_flight(self) -> contextlib.AbstractContextManager[object]:
        """Hold off heartbeats while an exited worker's jobs are put back (see ``beat_lock``)."""
        return self._live.beat_lock if self._live is not None else contextlib.nullcontext()

    def _running_workers(self) -> dict[str, str]:
        """Workers to vouch for in a heartbeat: running, not stopped (SIGSTOP), not exited."""
        return {
            slot.name: slot.token
            for slot in list(self._slots)
            if (process := slot.process) is not None
            and process.pid is not None
            and process_working(process.pid)
        }

    def _on_reaped(self, reaped: Reaped) -> None:
        """The reaper (on its thread) recovered a dead worker, of this manager or another."""
        self._pm.hook.qw_worker_reaped(
            manager=self.info,
            worker=reaped.worker,
            requeued=reaped.requeued,
            failed=reaped.failed,
        )

    def _trouble(self, what: str, exc: BaseException) -> None:
        log.warning("manager %s: %s failed: %s", self.name, what, exc)
        if self._live is not None:
            self._live.note_trouble()

    def _worker_name(self, slot: _Slot) -> str:
        return f"{self.name}.{slot.worker_pid}"

    def _supervise(self) -> None:
        try:
            while not self._stop_requested.is_set():
                self._restart_due()
                tick = self._enforce_time_limits()
                waitables: list[Any] = [self._wake_r]
                by_sentinel = {s.process.sentinel: s for s in self._slots if s.process is not None}
                waitables.extend(by_sentinel)
                restart_in = self._next_restart_in()
                timeout = tick if restart_in is None else min(tick, restart_in)
                for ready in multiprocessing.connection.wait(waitables, timeout=timeout):
                    slot = by_sentinel.get(ready) if isinstance(ready, int) else None
                    if slot is not None:
                        self._on_worker_exit(slot)
        except Exception:
            log.exception("manager %s: supervisor failed; stopping", self.name)
            self.error = "supervisor failed"
        finally:
            self._shutdown()

    def _next_restart_in(self) -> float | None:
        due = [s.restart_at for s in self._slots if s.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot)

    def _enforce_time_limits(self) -> float:
        """Kill the workers whose job overran; how long the supervisor may sleep."""
        now = time.monotonic()
        tick = TIMEOUT_TICK
        for slot in self._slots:
            running = slot.status.running() if slot.status is not None and slot.process is not None else None
            if running is None:
                continue
            if running.deadline <= now:
                self._time_out(slot, running)
            else:
                tick = min(tick, running.deadline - now)
        return tick

    def _time_out(self, slot: _Slot, running: Running) -> None:
        """Kill ``slot``'s worker, fail the job it overran with, put back the rest, restart."""
        assert slot.process is not None
        assert slot.status is not None
        process, worker = slot.process, self._worker_name(slot)
        process.kill()
        process.join()
        slot.process = None
        after = slot.status.running()
        same_run = after is not None and after.seq == running.seq  # not a job that started since
        log.warning(
            "manager %s: job %s ran past its %gs limit on %s; killed the worker",
            self.name,
            running.job_id,
            running.limit,
            worker,
        )
        recovered = 0
        try:
            if same_run and running.job_id is not None:
                self._settle_timed_out(worker, process.pid, running)
            # The others it held never ran. A job whose id was too long to report counts as
            # a crash, so a job that always overruns still ends in the failed registry.
            unknown = same_run and running.job_id is None
            count = self._liveness.max_recoveries if unknown else None
            recovered = self._settle_exited(slot, worker, max_recoveries=count)
        except BrokerUnavailable as exc:
            self._trouble(f"settling the jobs of {worker} (the reaper will put them back)", exc)
        self._pm.hook.qw_worker_died(
            manager=self.info, worker=worker, exitcode=process.exitcode, recovered=recovered
        )
        slot.restart_at = time.monotonic()

    def _settle_exited(
        self,
        slot: _Slot,
        worker: str,
        *,
        max_recoveries: int | None = None,
        crashed_job: str | None = None,
    ) -> int:
        """Settle what an exited worker still held; how many jobs were put back.

        First the jobs it ran successfully and had not finished yet: a worker finishes
        those with its next take (``Worker.finish_delay``) and reports them in its status
        record meanwhile, so they are finished here instead of running again (finishing
        is guarded by its held list, so one it did finish after all is left alone). The
        rest go back to their queues (:meth:`Broker.recover_worker`, which counts
        recoveries as ``max_recoveries`` and ``crashed_job`` say), with no heartbeat for
        the worker in flight, so none can register it again afterwards.

        :raises BrokerUnavailable: the broker could not be reached (a reaper will do it).
        """
        done = slot.status.successes() if slot.status is not None else []
        if done:
            self._broker.finish_jobs(worker=worker, job_ids=done)
        with self._no_heartbeat_in_flight():
            return self._broker.recover_worker(
                manager=self.name, worker=worker, max_recoveries=max_recoveries, crashed_job=crashed_job
            )

    def _settle_timed_out(self, worker: str, pid: int | None, running: Running) -> None:
        """Settle the job that overran, as its worker would have settled a failure.

        The plugins decide, here in the manager, through the same ``qw_job_failed`` hook
        (the exception is a :class:`JobTimeout`): the retry plugin may run it again, and
        otherwise it is failed, kind ``"timeout"``. ``qw_job_finished`` follows.
        """
        assert running.job_id is not None
        job = self._broker.get_job(running.job_id)
        if job is None:
            return
        error = JobTimeout(
            f"job {job.id} ran longer than its {running.limit:g}s limit; worker {worker} was killed"
        )
        failure = Failure.from_exception(error, worker=worker, kind="timeout")
        info = WorkerInfo(name=worker, manager=self.name, pid=pid or 0)
        hook = self._pm.hook
        try:
            decision: Decision | None = hook.qw_job_failed(job=job, worker=info, exc=error, failure=failure)
        except Exception:  # a plugin's bug must not stop the manager: keep the job
            log.exception("manager %s: a qw_job_failed plugin failed on job %s", self.name, job.id)
            decision = None
        if decision is None:  # every failure plugin blocked: keep the job, never drop it
            decision = Decision.fail()
        if decision.action is Action.RETRY:
            self._broker.retry_job(worker=worker, job=job, delay=decision.delay)
            outcome = Outcome.RETRIED
        elif decision.action is Action.DROP:
            self._broker.finish_jobs(worker=worker, job_ids=[job.id])
            outcome = Outcome.DROPPED
        else:
            self._broker.fail_job(worker=worker, job=job, failure=failure, limits=self._spec.failed_limits)
            outcome = Outcome.FAILED
        try:
            hook.qw_job_finished(job=job, worker=info, outcome=outcome, duration=running.limit)
        except Exception:
            log.exception("manager %s: a qw_job_finished plugin failed on job %s", self.name, job.id)

    def _on_worker_exit(self, slot: _Slot) -> None:
        assert slot.process is not None
        process, worker = slot.process, self._worker_name(slot)
        process.join()
        slot.process = None
        if process.exitcode == EXIT_CANNOT_START:
            self.error = f"worker {worker} could not start (see its error above)"
            log.error("manager %s: %s; stopping", self.name, self.error)
            self._stop_requested.set()
            return
        # Blame the job it died with in hand, and only that one: the others it held were
        # waiting their turn (or ran and were not finished yet). Dying between jobs, it
        # blames none; with an id too long to report, every job it held.
        busy = slot.status.busy() if slot.status is not None else None
        try:
            recovered = self._settle_exited(
                slot,
                worker,
                max_recoveries=None if busy is None else self._liveness.max_recoveries,
                crashed_job=None if busy is None else busy.job_id,
            )
        except BrokerUnavailable as exc:  # its heartbeat lapses, and a reaper puts them back
            self._trouble(f"putting back the jobs of {worker} (the reaper will)", exc)
            recovered = 0
        self._pm.hook.qw_worker_died(
            manager=self.info, worker=worker, exitcode=process.exitcode, recovered=recovered
        )
        lived = time.monotonic() - slot.started_at
        slot.failures = 0 if lived >= HEALTHY_RUN_SECONDS else slot.failures + 1
        first, cap = self.restart_backoff
        slot.restart_at = time.monotonic() + (
            min(cap, first * 2 ** (slot.failures - 1)) if slot.failures else 0.0
        )

    def _shutdown(self) -> None:
        try:
            self._pm.hook.qw_manager_stopping(manager=self.info)
            running = [s for s in self._slots if s.process is not None and s.process.is_alive()]
            for slot in running:
                assert slot.process is not None
                if self._cold.is_set():
                    slot.process.kill()
                else:
                    slot.process.terminate()  # SIGTERM: finish the current job, then exit
            self._wait_for_workers(running)
            if self._live is not None:
                self._live.stop()  # after the workers: a long last job keeps its heartbeat
            self._settle_stopped_workers()
        finally:
            self._broker.close()
            self._stopped.set()

    def _settle_stopped_workers(self) -> None:
        """Put back what the stopped workers held and deregister, retrying for one TTL.

        Nothing counts as a crash: the workers were stopped on purpose. If the broker stays
        unreachable, the manager's and its workers' heartbeats lapse and a reaper (of
        another manager, or of the next start of this one) puts the jobs back.
        """
        backoff = Backoff(first=0.1, cap=1.0)
        deadline = time.monotonic() + self._liveness.ttl
        while True:
            try:
                for slot in self._slots:
                    if slot.process is not None:
                        worker = self._worker_name(slot)
                        self._settle_exited(slot, worker)
                        slot.process = None
                self._broker.deregister_manager(self.name)
                return
            except BrokerUnavailable as exc:
                if time.monotonic() >= deadline:
                    self.error = f"could not deregister: {exc}"
                    log.error("manager %s: %s; a reaper will put its jobs back", self.name, self.error)
                    return
                time.sleep(backoff.next())

    def _wait_for_workers(self, slots: list[_Slot]) -> None:
        """Wait for warm stops; kill what is left after the grace period or a cold request.

        Each worker is settled as soon as it exits, not when the last one does: a
        heartbeat sent while it was exiting may have registered it again, and left so
        while a sibling finishes a long job, its heartbeat would lapse and a reaper (this
        manager's own included) would take it for dead.
        """
        deadline = None if self.grace is None else time.monotonic() + self.grace
        waiting = list(slots)
        while waiting:
            if self._cold.is_set() or (deadline is not None and time.monotonic() >= deadline):
                for slot in waiting:
                    if slot.process is not None:
                        slot.process.kill()
            else:  # time limits still hold while the last jobs finish
                self._enforce_time_limits()
            for slot in waiting:
                process = slot.process
                if process is not None and not process.is_alive():
                    process.join()
                    with contextlib.suppress(BrokerUnavailable):  # _settle_stopped_workers retries
                        self._settle_exited(slot, self._worker_name(slot))
                        slot.process = None
            waiting = [s for s in waiting if s.process is not None and s.process.is_alive()]
            sentinels = [s.process.sentinel for s in waiting if s.process is not None]
            if sentinels:
                multiprocessing.connection.wait(sentinels, timeout=0.1)
