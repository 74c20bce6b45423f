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

Settling an exited worker. Whatever way a worker ends (it crashed, was killed for a time
limit, stopped on request, or could not start), the manager settles it before anything
else: the jobs it ran and had not finished are finished, the one it overran with is
settled by the failure plugins, the rest go back to their queues. What the worker had in
hand is read from its status record when it exits; if the broker cannot be reached then,
the settling is retried (with a back-off) until it works, and the manager does not
deregister while any worker is unsettled, so a reaper still finds what it held. The
manager learns that a worker exited from a pidfd where the platform has one (a process
the job forked cannot hold it open, as it can the pipe ``multiprocessing`` watches) and
from a ``waitpid`` sweep every tick besides.

Nothing but a stop request ends the supervisor: an error in one of its steps is logged,
waited out with a back-off, and the loop goes on.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import attrs

from qw_core import logsetup, settle
from qw_core.backoff import Backoff
from qw_core.broker import Broker, BrokerFactory, Reaped
from qw_core.errors import BrokerUnavailable, ConfigurationError, JobTimeout, QwError
from qw_core.eventloops import DEFAULT_EVENT_LOOP, check_event_loop, event_loop_in_use
from qw_core.execution import is_async, slots_for
from qw_core.identity import identity_alive, process_identity
from qw_core.liveness import (
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_RECOVERIES,
    DEFAULT_TTL,
    Liveness,
    LivenessSettings,
    process_working,
)
from qw_core.models import Failure, ManagerInfo, WorkerInfo
from qw_core.naming import check_manager_name, check_queues, claim_name, default_manager_name
from qw_core.plugins import PluginConfig, make_plugin_manager
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.process import WorkerSpec, stop_signals_held, worker_main
from qw_core.recycling import Recycling
from qw_core.results import DEFAULT_RESULT_TTL, check_ttl
from qw_core.scheduler import Scheduler, check_schedules
from qw_core.schedules import Schedule
from qw_core.status import Busy, JobStatus, Running, id_digest
from qw_core.targets import TargetLoader
from qw_core.worker import DEFAULT_PREFETCH

log = logging.getLogger("qw.manager")

#: The most worker processes one manager runs: more is a slip of digits (``-w 10000`` for
#: ``-w 10``) that would fork until the host runs out of memory, not a plan.
MAX_WORKERS = 1000
#: A worker that lived at least this long resets its slot's restart back-off.
HEALTHY_RUN_SECONDS = 10.0
#: Longest the supervisor sleeps while a job may be running under a time limit: how late
#: past its deadline a job can be killed.
TIMEOUT_TICK = 0.25


def _pidfd(pid: int | None) -> int | None:
    """A pidfd for ``pid`` (Linux 5.3+), or ``None`` where there is none.

    It becomes readable when the process exits, and unlike the pipe ``multiprocessing``
    watches, no process the worker forks can keep it from becoming so.
    """
    open_pidfd = getattr(os, "pidfd_open", None)
    if open_pidfd is None or pid is None:
        return None
    try:
        return int(open_pidfd(pid))
    except OSError:  # an old kernel, or a sandbox that forbids it: the sentinel and sweep do
        return None


@attrs.define
class _Slot:
    """One worker position: the process filling it and its restart back-off."""

    process: BaseProcess | None = None
    exit_fd: int | None = None  # a pidfd of the process, readable once it exited
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    status: JobStatus | None = None  # what its worker runs, shared with it
    name: str = ""  # its worker's name
    token: str = ""  # its worker's heartbeat token
    killed: bool = False  # the manager killed it on purpose (a cold stop)
    finished_for: bool = False  # its successes were finished for it while it is stopped
    go: Any = None  # the event its worker waits for (kept: with spawn, the child opens it late)

    @property
    def worker_pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def exit_handle(self) -> int | None:
        """What to wait on for the process's exit: its pidfd, else its sentinel."""
        if self.process is None:
            return None
        return self.exit_fd if self.exit_fd is not None else self.process.sentinel

    def forget_process(self) -> None:
        self.process = None
        self.killed = False
        self.finished_for = False
        if self.exit_fd is not None:
            os.close(self.exit_fd)
            self.exit_fd = None


@attrs.frozen(kw_only=True)
class _Exited:
    """A worker process that exited, and what its status record said about its jobs then.

    :param worker: its name.
    :param pid: its pid.
    :param exitcode: its exit code (negative: the signal that killed it).
    :param successes: jobs it ran successfully and had not finished in the broker yet.
    :param died: it exited without being asked to, or was killed for a time limit
        (``qw_worker_died`` fires once it is settled).
    :param in_hand: the jobs it died with in hand, to blame for the crash: one is counted;
        several are suspects, put back uncounted to run alone (see
        :meth:`Broker.recover_worker`); none counts nothing. (An id too long for the status
        record is found among the worker's held jobs by its digest.)
    :param timed_out: the job it was killed for, past its time limit.
    """

    worker: str
    pid: int | None
    exitcode: int | None
    successes: tuple[str, ...] = ()
    died: bool = False
    in_hand: tuple[Busy, ...] = ()
    timed_out: Running | None = None


class Manager:
    """Starts and supervises worker processes that call ``target(job_id, job_data)``.

    :param target: a callable or a target string (``"pkg.module:func"``); a string is
        loaded here once to fail early, and again in each worker.
    :param broker: a broker, or a factory opening one; workers open theirs through
        :meth:`Broker.factory`.
    :param num_workers: worker processes to run (at most :data:`MAX_WORKERS`); defaults to
        the CPU count.
    :param name: the manager's name; refused at start if a running manager holds it.
        Without one it runs under the host name, or ``<host>-2``, ``-3``... if a manager
        on this host holds that already.
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
    :param queues: the named queues the workers serve after the manager's own queue, in
        strict priority order (``"default"`` is the shared queue); none: the shared queue.
    :param result_ttl: seconds the broker keeps what a target returned, or that its job
        succeeded when it returned ``None`` (``0``: nothing); see :mod:`qw_core.results`.
    :param schedules: periodic jobs this manager enqueues (:class:`~qw_core.schedules.Schedule`),
        besides those the target declares (a :class:`~qw_core.Router`'s, as its
        ``qw_schedules``); see :mod:`qw_core.scheduler`. Needs a broker whose
        ``capabilities.schedules`` is true.
    :param max_jobs_per_worker: replace a worker once it ran this many jobs (``None``:
        never); see :mod:`qw_core.recycling`.
    :param max_worker_memory: replace a worker once its memory (RSS) is over this many
        megabytes (MiB), checked after each job (``None``: never).
    :param event_loop: the event loop an ``async def`` target's jobs run on in each worker:
        ``"auto"`` (uvloop if installed), ``"asyncio"`` or ``"uvloop"`` (refused here if it
        is not installed); see :mod:`qw_core.eventloops`.
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
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        result_ttl: float = DEFAULT_RESULT_TTL,
        schedules: Sequence[Schedule] = (),
        max_jobs_per_worker: int | None = None,
        max_worker_memory: int | None = None,
        event_loop: str = DEFAULT_EVENT_LOOP,
    ) -> None:
        if job_timeout is not None and not job_timeout > 0:
            raise ConfigurationError(f"the job timeout must be positive, not {job_timeout!r}")
        self._liveness = LivenessSettings(
            heartbeat=heartbeat,
            ttl=heartbeat_ttl,
            reap_interval=reap_interval,
            max_recoveries=max_recoveries,
            failed_limits=failed_limits,
        )
        if num_workers is None:
            num_workers = min(os.cpu_count() or 1, MAX_WORKERS)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ConfigurationError(f"the number of workers must be a positive integer, not {num_workers!r}")
        if num_workers > MAX_WORKERS:
            raise ConfigurationError(
                f"the number of workers must be at most {MAX_WORKERS}, not {num_workers} "
                "(more jobs at once per worker: -c/concurrency)"
            )
        self._plugins = plugins or PluginConfig()
        self._pm = make_plugin_manager(self._plugins)
        loaded = TargetLoader(self._pm.hook).load(target)  # fail here, not in N workers
        try:
            self.concurrency = slots_for(loaded, concurrency)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        event_loop = check_event_loop(event_loop)  # here, not in N workers
        self._loop_used = event_loop_in_use(event_loop) if is_async(loaded) else None
        self._broker = broker if isinstance(broker, Broker) else broker()
        # A name given is checked here; the name to run under is claimed by claim_name().
        self._wanted_name = None if name is None else check_manager_name(self._broker, name)
        self.queues = check_queues(self._broker, queues)
        self.schedules = self._checked_schedules([*schedules, *getattr(loaded, "qw_schedules", ())])
        self.name = self._wanted_name or default_manager_name(self._broker)
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
            concurrency=self.concurrency,
            queues=self.queues,
            result_ttl=_checked_ttl(result_ttl),
            recycling=Recycling(max_jobs=max_jobs_per_worker, max_memory=max_worker_memory),
            event_loop=event_loop,
        )
        if start_method is None:
            start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._ctx = multiprocessing.get_context(start_method)
        self._slots = [_Slot(status=JobStatus(self._ctx, self.concurrency)) for _ in range(num_workers)]
        # This start of the manager, and where it runs (see qw_core.identity).
        self._token = f"{secrets.token_hex(8)}@{process_identity()}"
        self._claimed = False
        self._spawned = 0
        self._live: Liveness | None = None
        self._scheduler: Scheduler | None = None
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._stop_requested = threading.Event()
        self._cold = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsettled: list[_Exited] = []  # exited workers whose settling failed
        self._settle_at = 0.0  # when to retry settling them
        self._settle_backoff = Backoff(first=0.1, cap=1.0)
        self.error: str | None = None

    def _checked_schedules(self, schedules: Sequence[Schedule]) -> tuple[Schedule, ...]:
        """``schedules``, each id once, their queues' names checked, on a broker that keeps them."""
        checked = check_schedules(schedules)
        if checked and not self._broker.capabilities.schedules:
            raise ConfigurationError(
                f"this manager has {len(checked)} schedule(s), but the {self._broker.describe()} backend "
                "does not keep periodic jobs: use one that does, such as redis"
            )
        check_queues(self._broker, sorted({s.queue for s in checked if s.queue is not None}))
        return checked

    # -- public API (the original's start/stop/join, plus run) -----------------------

    def claim_name(self) -> str:
        """Settle the name this manager runs under, and return it (idempotent).

        A name it was given is refused if a running manager holds it; without one it takes
        the host name, or the next free ``<host>-N`` (see :mod:`qw_core.naming`). Called by
        :meth:`start`; call it first to queue jobs on the manager's own queue beforehand.

        :raises ConfigurationError: the name given is in use.
        """
        if not self._claimed:
            self.name = claim_name(self._broker, self._wanted_name, heartbeat=self._liveness.heartbeat)
            self.info = attrs.evolve(self.info, name=self.name)
            self._spec = attrs.evolve(self._spec, manager=self.name)
            self._claimed = True
        return self.name

    def start(self) -> None:
        """Start the workers, register the manager, and supervise in a background thread."""
        if self._thread is not None:
            raise QwError(f"manager {self.name} was already started")
        self.claim_name()
        self._pm.hook.qw_manager_starting(manager=self.info, broker=self._broker)
        for warning in self._broker.setup_warnings():
            log.warning("manager %s: %s", self.name, warning)
        # Registered, with a heartbeat, before any worker can hold a job: a reaper finds
        # the workers of a manager that dies from here on.
        previous = self._broker.beat(manager=self.name, token=self._token, workers={}, ttl=self._liveness.ttl)
        holder = previous.get(self.name)
        if holder is not None and identity_alive(holder.partition("@")[2]) is True:
            # Claimed at the same moment by another manager (claim_name checked just before).
            log.warning(
                "manager %s: another manager started under this name at the same moment (%s); "
                "names must be unique: stop one, or give each its own with -n NAME",
                self.name,
                holder.partition("@")[2] or "another host",
            )
        elif holder is not None:
            log.info("manager %s: taking over the name from an earlier start that died", self.name)
        self._live = Liveness(
            self._broker.factory(),
            manager=self.name,
            token=self._token,
            settings=self._liveness,
            workers=self._running_workers,
            on_reaped=self._on_reaped,
            running=self._running_jobs,
            begun=self._jobs_begun,
        )
        for slot in self._slots:
            self._spawn(slot)
        try:
            self._register()
        except BaseException:
            for slot in self._slots:  # do not leave workers behind without a manager
                if slot.process is not None:
                    slot.process.kill()
                    slot.process.join()
            raise
        self._live.start()
        if self.schedules:
            self._scheduler = Scheduler(
                self._broker.factory(),
                manager=self.name,
                schedules=self.schedules,
                heartbeat=self._liveness.heartbeat,
                ttl=self._liveness.ttl,
            )
            self._scheduler.start()
        if self._loop_used is not None:
            log.info(
                "manager %s: each worker runs up to %d jobs at once on the %s event loop",
                self.name,
                self.concurrency,
                self._loop_used,
            )
        settle.notify(self._pm.hook.qw_manager_started, manager=self.info)
        self._thread = threading.Thread(target=self._supervise, name=f"qw-manager-{self.name}", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        """Register the manager, waiting out an outage until a stop is asked for.

        Its first heartbeat has reached the broker (the address and credentials are
        right) and its workers have started: a server that refuses work for a while now
        (out of memory, busy with a script, failing over) is waited out here, as by
        every later call of the manager's, not a reason to exit.
        """
        backoff = Backoff(first=0.1, cap=1.0)
        while True:
            try:
                self._broker.register_manager(self.name)
            except BrokerUnavailable as exc:
                if self._stop_requested.is_set():
                    raise
                if not backoff.failures:
                    log.warning("manager %s: registering failed, retrying: %s", self.name, exc)
                self._stop_requested.wait(backoff.next())
                continue
            if backoff.failures:
                log.info("manager %s: registered after %d failed attempt(s)", self.name, backoff.failures)
            return

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
        called from the main thread (where Python delivers signals). Logs to stderr at
        INFO, as ``qw run`` does, unless the application configured logging itself.
        """
        logsetup.configure_unless_configured()
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
        with stop_signals_held():  # the worker lets them through once its handlers are in place
            process.start()
        self._spawned += 1
        slot.process, slot.started_at, slot.restart_at = process, time.monotonic(), None
        slot.exit_fd = _pidfd(process.pid)
        slot.name, slot.token = f"{self.name}.{process.pid}", f"{self._token}.{self._spawned}"
        try:
            self._broker.beat(
                manager=self.name, token=self._token, workers={slot.name: slot.token}, ttl=self._liveness.ttl
            )
        except Exception as exc:
            # It waits: taking jobs with no heartbeat, it would be reaped by other managers
            # while it lives, and its jobs run twice. The heartbeat thread's next beat
            # writes one (_let_go_after_a_beat).
            self._trouble(f"the first heartbeat of worker {slot.name}", exc)
            return
        go.set()

    def _let_go_after_a_beat(self) -> None:
        """Let the workers whose first heartbeat failed take jobs once a heartbeat begun
        after they started was written (the heartbeat thread vouches for every running one)."""
        beat_at = self._live.beat_at if self._live is not None else -float("inf")
        for slot in self._slots:
            go = slot.go
            if slot.process is not None and go is not None and beat_at > slot.started_at and not go.is_set():
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

    def _running_jobs(self) -> dict[str, dict[str, float]]:
        """What each worker has in hand now and since when, from the records they share
        with this manager (for :meth:`Broker.job_status`: no Redis write per job)."""
        found: dict[str, dict[str, float]] = {}
        for slot in list(self._slots):
            if slot.status is None or not slot.name:
                continue
            jobs = {
                b.job_id: b.began_at for b in slot.status.in_hand() if b.job_id is not None and b.began_at
            }
            found[slot.name] = jobs
        return found

    def _jobs_begun(self) -> int:
        """How many jobs this manager's workers have begun, from the counters in the records
        they share with it (each slot's ``seq``, which outlives a worker's restart): the
        heartbeat notes the growth as the minute's throughput (no broker write per job)."""
        return sum(
            slot.status.seq(n)
            for slot in list(self._slots)
            if slot.status is not None
            for n in range(slot.status.slots)
        )

    def _on_reaped(self, reaped: Reaped) -> None:
        """The reaper (on its thread) recovered a dead worker, of this manager or another."""
        self._pm.hook.qw_worker_reaped(
            manager=self.info,
            worker=reaped.worker,
            requeued=reaped.requeued,
            failed=reaped.failed,
        )

    def _trouble(self, what: str, exc: BaseException, *, quiet: bool = False) -> None:
        """A broker call failed: log it (unless ``quiet``). An outage also holds the reaper
        off for a TTL (nobody could beat meanwhile); any other error does not, or it would
        hold it off for as long as the error lasts."""
        outage = isinstance(exc, BrokerUnavailable)
        if outage and self._live is not None:
            self._live.note_trouble()
        if quiet:
            return
        if outage:
            log.warning("manager %s: %s failed: %s", self.name, what, exc)
        else:
            log.error("manager %s: %s failed", self.name, what, exc_info=exc)

    def _supervise(self) -> None:
        backoff = Backoff(first=0.1, cap=2.0)
        try:
            while not self._stop_requested.is_set():
                try:
                    self._supervise_once()
                except Exception:  # a bug or a broken server: log, wait, go on supervising
                    log.exception("manager %s: supervising failed; going on", self.name)
                    self._stop_requested.wait(backoff.next())
                else:
                    backoff.reset()
        finally:
            self._shutdown()

    def _supervise_once(self) -> None:
        """One turn: restart, settle what is pending, enforce time limits, wait for an exit."""
        self._restart_due()
        self._let_go_after_a_beat()
        self._settle_pending()
        self._finish_for_stopped()
        tick = self._enforce_time_limits()
        for slot in self._slots:  # exits a handle may miss (no pidfd, and a sentinel held open)
            if slot.process is not None and slot.process.exitcode is not None:
                self._on_worker_exit(slot)
        by_handle = {h: s for s in self._slots if (h := s.exit_handle()) is not None}
        waitables: list[Any] = [self._wake_r, *by_handle]
        restart_in = self._next_restart_in()
        timeout = tick if restart_in is None else min(tick, restart_in)
        if self._unsettled:
            timeout = min(timeout, max(0.0, self._settle_at - time.monotonic()))
        for ready in multiprocessing.connection.wait(waitables, timeout=timeout):
            exited = by_handle.get(ready) if isinstance(ready, int) else None
            if exited is not None and exited.process is not None:
                self._on_worker_exit(exited)

    def _finish_for_stopped(self) -> None:
        """Finish the jobs a stopped worker (SIGSTOP, a debugger) ran successfully and had
        not finished yet.

        A stopped worker gets no heartbeat: stopped past the TTL, it is reaped, and the
        jobs still on its held list go back to run again, those that already ran included
        (a worker finishes quick jobs with its next take, which a slow job in the same
        batch may put off for long). Its status record cannot change while it is stopped,
        so what it reports is exact; when it resumes, its own finish of them is a no-op.
        """
        for slot in self._slots:
            process, status = slot.process, slot.status
            if process is None or process.pid is None or status is None:
                continue
            if process_working(process.pid):
                slot.finished_for = False
            elif not slot.finished_for and process.exitcode is None:
                done = status.successes()
                if done:
                    self._broker.finish_jobs(
                        worker=slot.name, job_ids=done, keep_finished=self._spec.result_ttl
                    )
                slot.finished_for = True

    def _next_restart_in(self) -> float | None:
        due = [s.restart_at for s in self._slots if s.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot)

    def _enforce_time_limits(self) -> float:
        """Kill the workers with a job past the moment to kill it (its deadline, or later
        for one the worker times out itself); how long the supervisor may sleep."""
        now = time.monotonic()
        tick = TIMEOUT_TICK
        for slot in self._slots:
            if slot.status is None or slot.process is None:
                continue
            for running in slot.status.running():
                if running.kill_at <= now:
                    self._time_out(slot, running)
                    break
                tick = min(tick, running.kill_at - now)
        return tick

    def _time_out(self, slot: _Slot, running: Running) -> None:
        """Kill ``slot``'s worker, settle the job it overran with and the rest, restart it."""
        assert slot.process is not None
        assert slot.status is not None
        slot.process.kill()
        slot.process.join()
        log.warning(
            "manager %s: job %s ran past its %gs limit on %s%s; killed the worker",
            self.name,
            running.job_id,
            running.limit,
            slot.name,
            " and did not come back" if running.kill_at > running.deadline else "",
        )
        in_hand = tuple(slot.status.in_hand())
        if running.kill_at > running.deadline and len(in_hand) > 1:
            # A last resort, with other jobs in hand: the overdue one may only have been
            # kept from ending by another that blocks the event loop (or holds the GIL).
            # Nobody knows which: none is counted or failed, all run again alone.
            exited = self._exited(slot, died=True, in_hand=in_hand)
        else:
            same_run = slot.status.seq(running.slot) == running.seq  # not a job that started since
            # Settled as timed out by the worker already (its thread never came back): the
            # others it held are put back uncounted, as they are in any case.
            overran = same_run and not running.abandoned
            exited = self._exited(slot, died=True, timed_out=running if overran else None)
        slot.forget_process()
        slot.restart_at = time.monotonic()
        self._settle_or_later(exited)

    def _on_worker_exit(self, slot: _Slot) -> None:
        """A worker exited on its own: settle it, then restart it (or stop, if it cannot start)."""
        assert slot.process is not None
        slot.process.join()
        status = slot.status
        cannot_start = status is not None and status.could_not_start
        recycled = status is not None and status.was_recycled
        # Blame the jobs it died with in hand, and only those: the others it held were
        # waiting their turn (or ran and were not finished yet). Between jobs, none.
        in_hand = tuple(status.in_hand()) if status is not None and not cannot_start else ()
        exited = self._exited(slot, died=not cannot_start and not recycled, in_hand=in_hand)
        slot.forget_process()
        self._settle_or_later(exited)
        if recycled:  # it stopped warmly to be replaced (it said why): no crash, no back-off
            log.debug("manager %s: worker %s was recycled; starting another", self.name, exited.worker)
            slot.failures = 0
            slot.restart_at = time.monotonic()
            return
        if cannot_start:
            self.error = f"worker {exited.worker} could not start (see its error above)"
            log.error("manager %s: %s; stopping", self.name, self.error)
            self._stop_requested.set()
            return
        lived = time.monotonic() - slot.started_at
        slot.failures = 0 if lived >= HEALTHY_RUN_SECONDS else slot.failures + 1
        first, cap = self.restart_backoff
        slot.restart_at = time.monotonic() + (
            min(cap, first * 2 ** (slot.failures - 1)) if slot.failures else 0.0
        )

    def _exited(
        self, slot: _Slot, *, died: bool, in_hand: tuple[Busy, ...] = (), timed_out: Running | None = None
    ) -> _Exited:
        """``slot``'s worker, which has exited, with the jobs its status record reports."""
        assert slot.process is not None
        return _Exited(
            worker=slot.name,
            pid=slot.process.pid,
            exitcode=slot.process.exitcode,
            successes=tuple(slot.status.successes()) if slot.status is not None else (),
            died=died,
            in_hand=in_hand,
            timed_out=timed_out,
        )

    # -- settling exited workers (supervisor thread) ---------------------------------

    def _settle_or_later(self, exited: _Exited) -> None:
        """Settle ``exited`` now, or keep it to retry later (see :meth:`_settle_pending`)."""
        try:
            recovered = self._settle(exited)
        except Exception as exc:
            self._unsettled.append(exited)
            self._settle_at = time.monotonic() + self._settle_backoff.next()
            quiet = self._settle_backoff.failures > 1  # said once per streak
            self._trouble(f"settling the jobs of {exited.worker} (retrying)", exc, quiet=quiet)
            return
        if exited.died:
            settle.notify(
                self._pm.hook.qw_worker_died,
                manager=self.info,
                worker=exited.worker,
                exitcode=exited.exitcode,
                recovered=recovered,
            )

    def _settle_pending(self) -> None:
        """Retry settling the workers whose settling failed, once their back-off is over."""
        if not self._unsettled or time.monotonic() < self._settle_at:
            return
        pending, self._unsettled = self._unsettled, []
        for exited in pending:
            self._settle_or_later(exited)
        if not self._unsettled:
            self._settle_backoff.reset()

    def _settle(self, exited: _Exited) -> int:
        """Settle what an exited worker still held; how many jobs were put back.

        In order: the job it overran with (by the failure plugins, as a worker settles a
        failure); the jobs it ran successfully and had not finished yet (a worker finishes
        those with its next take, ``Worker.finish_delay``, and reports them meanwhile), so
        they do not run again; then the rest go back to their queues
        (:meth:`Broker.recover_worker`), with no heartbeat for the worker in flight, so
        none can register it again afterwards. Recoveries are counted only for the job it
        died with in hand; when it had several, none is counted and they are put back as
        suspects, each to run alone next time, so that a job that kills its process is
        told from the innocent ones beside it. Every step is guarded or idempotent, so a
        settle that failed can be run again.

        :raises Exception: a broker call failed (the caller retries later).
        """
        worker = exited.worker
        if exited.timed_out is not None:
            overran = self._job_id(worker, exited.timed_out)
            if overran is not None:
                self._settle_timed_out(worker, exited.pid, exited.timed_out, overran)
        if exited.successes:
            self._broker.finish_jobs(
                worker=worker, job_ids=list(exited.successes), keep_finished=self._spec.result_ttl
            )
        in_hand = [job_id for busy in exited.in_hand if (job_id := self._job_id(worker, busy)) is not None]
        blame = in_hand[0] if len(exited.in_hand) == 1 and in_hand else None
        with self._no_heartbeat_in_flight():
            return self._broker.recover_worker(
                manager=self.name,
                worker=worker,
                max_recoveries=None if blame is None else self._liveness.max_recoveries,
                crashed_job=blame,
                suspects=in_hand if len(exited.in_hand) > 1 else [],
                limits=self._spec.failed_limits,
            )

    def _job_id(self, worker: str, found: Busy | Running) -> str | None:
        """The id of a job ``worker`` reported: as written, or, for one too long for the
        status record, the held job whose digest it wrote (``None``: not held any more)."""
        if found.job_id is not None:
            return found.job_id
        if found.digest is None:
            return None
        return next((i for i in self._broker.held_job_ids(worker) if id_digest(i) == found.digest), None)

    def _settle_timed_out(self, worker: str, pid: int | None, running: Running, job_id: str) -> None:
        """Settle the job that overran, as its worker would have settled a failure.

        The plugins decide, here in the manager, through the same ``qw_job_failed`` hook
        (the exception is a :class:`JobTimeout`): the retry plugin may run it again, and
        otherwise it is failed, kind ``"timeout"``. ``qw_job_finished`` follows.
        """
        job = self._broker.get_job(job_id)
        if job is None:
            return
        error = JobTimeout(
            f"job {job.id} ran longer than its {running.limit:g}s limit; worker {worker} was killed"
        )
        failure = Failure.from_exception(error, worker=worker, kind="timeout")
        info = WorkerInfo(name=worker, manager=self.name, pid=pid or 0)
        hook = self._pm.hook
        decision = settle.decide(hook, job, info, error, failure)
        outcome = settle.apply(
            self._broker,
            worker=worker,
            job=job,
            decision=decision,
            failure=failure,
            limits=self._spec.failed_limits,
        )
        settle.notify(hook.qw_job_finished, job=job, worker=info, outcome=outcome, duration=running.limit)

    def _shutdown(self) -> None:
        try:
            if self._scheduler is not None:
                self._scheduler.stop()  # a stopping manager enqueues no more ticks
            settle.notify(self._pm.hook.qw_manager_stopping, manager=self.info)
            for slot in self._slots:  # died just before the stop: settled as any crash
                if slot.process is not None and slot.process.exitcode is not None:
                    self._on_worker_exit(slot)
            running = [s for s in self._slots if s.process is not None]
            for slot in running:
                assert slot.process is not None
                if self._cold.is_set():
                    self._kill(slot)
                else:
                    slot.process.terminate()  # SIGTERM: finish the current job, then exit
            self._wait_for_workers(running)
            if self._live is not None:
                self._live.stop()  # after the workers: a long last job keeps its heartbeat
            self._settle_stopped_workers()
        except Exception:
            self.error = "stopping failed"
            log.exception("manager %s: stopping failed; a reaper puts back what its workers held", self.name)
        finally:
            self._broker.close()
            self._stopped.set()

    def _kill(self, slot: _Slot) -> None:
        """Kill ``slot``'s worker on purpose (a cold stop): what it held is not its fault."""
        assert slot.process is not None
        slot.killed = True
        slot.process.kill()

    def _settle_stopped_workers(self) -> None:
        """Settle what is still unsettled and deregister, retrying for one TTL.

        The manager deregisters only once every worker is settled: a reaper looks only at
        registered managers, so one that left with a worker unsettled would orphan its
        jobs. If the broker stays unreachable, the manager's and its workers' heartbeats
        lapse and a reaper (of another manager, or of the next start of this one) puts the
        jobs back.
        """
        deadline = time.monotonic() + self._liveness.ttl
        while True:
            self._settle_at = 0.0
            self._settle_pending()
            if not self._unsettled:
                try:
                    self._broker.deregister_manager(self.name)
                    return
                except Exception as exc:
                    self._trouble("deregistering", exc)
            if time.monotonic() >= deadline:
                self.error = "could not settle its workers and deregister"
                log.error("manager %s: %s; a reaper will put its jobs back", self.name, self.error)
                return
            time.sleep(self._settle_backoff.next())

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
                    if slot.process is not None and not slot.killed:
                        self._kill(slot)
            else:  # time limits still hold while the last jobs finish
                self._enforce_time_limits()
            for slot in waiting:
                if slot.process is not None and slot.process.exitcode is not None:
                    self._on_stopped(slot)
            waiting = [s for s in waiting if s.process is not None]
            handles = [h for s in waiting if (h := s.exit_handle()) is not None]
            if handles:
                multiprocessing.connection.wait(handles, timeout=0.1)

    def _on_stopped(self, slot: _Slot) -> None:
        """A worker asked to stop has exited: settle it (a crash in its last job still
        counts against that job, unless the manager killed it)."""
        assert slot.process is not None
        slot.process.join()
        in_hand = () if slot.killed or slot.status is None else tuple(slot.status.in_hand())
        exited = self._exited(slot, died=False, in_hand=in_hand)
        slot.forget_process()
        self._settle_or_later(exited)


def _checked_ttl(ttl: float) -> float:
    try:
        return check_ttl(ttl)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
