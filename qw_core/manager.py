"""The manager: a process manager that keeps N worker processes running.

It starts the workers, registers itself once they are started, replaces a worker that
dies (putting the jobs it held back first, and backing off so a crash loop does not
spin), and on request stops them: warm (each finishes its current job) and, after an
optional grace period or a second request, cold (killed, their jobs put back).

The manager never runs jobs itself, so a target that hangs or hogs the GIL cannot stop
it from supervising. All its broker calls happen on one supervisor thread; ``stop()``
and signal handlers only wake that thread through a pipe.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import attrs

from qw_core.broker import Broker, BrokerFactory
from qw_core.errors import ConfigurationError, QwError
from qw_core.models import ManagerInfo
from qw_core.plugins import PluginConfig, make_plugin_manager
from qw_core.process import EXIT_CANNOT_START, WorkerSpec, worker_main
from qw_core.targets import TargetLoader

log = logging.getLogger("qw.manager")

#: A worker that lived at least this long resets its slot's restart back-off.
HEALTHY_RUN_SECONDS = 10.0


@attrs.define
class _Slot:
    """One worker position: the process filling it and its restart back-off."""

    process: BaseProcess | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None

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
    :param plugins: which plugins the manager and each worker load.
    :param prefetch: how many jobs a worker may take at once (see :class:`~qw_core.worker.Worker`).
    :param block_timeout: how long an idle worker blocks in the broker per wait.
    :param grace: seconds a warm stop waits for running jobs before killing the workers
        and putting their jobs back; ``None`` waits as long as the jobs take.
    :param restart_backoff: (first, cap) seconds before restarting a worker that keeps dying.
    :param start_method: the multiprocessing start method; defaults to ``fork`` where it
        exists (so scripts without a ``__main__`` guard work, as with the original qw).
    """

    def __init__(
        self,
        target: str | Callable[..., Any],
        broker: Broker | BrokerFactory,
        *,
        num_workers: int | None = None,
        name: str | None = None,
        plugins: PluginConfig | None = None,
        prefetch: int = 1,
        block_timeout: float = 1.0,
        grace: float | None = None,
        restart_backoff: tuple[float, float] = (0.1, 10.0),
        start_method: str | None = None,
    ) -> None:
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
        )
        if start_method is None:
            start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._ctx = multiprocessing.get_context(start_method)
        self._slots = [_Slot() for _ in range(num_workers)]
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
        process = self._ctx.Process(  # type: ignore[attr-defined]  # typeshed's BaseContext lacks Process
            target=worker_main, args=(self._spec, os.getpid()), name=f"qw-worker-{self.name}", daemon=False
        )
        process.start()
        slot.process, slot.started_at, slot.restart_at = process, time.monotonic(), None

    def _worker_name(self, slot: _Slot) -> str:
        return f"{self.name}.{slot.worker_pid}"

    def _supervise(self) -> None:
        try:
            while not self._stop_requested.is_set():
                self._restart_due()
                waitables: list[Any] = [self._wake_r]
                by_sentinel = {s.process.sentinel: s for s in self._slots if s.process is not None}
                waitables.extend(by_sentinel)
                for ready in multiprocessing.connection.wait(waitables, timeout=self._next_restart_in()):
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
        recovered = self._broker.recover_worker(manager=self.name, worker=worker)
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
            for slot in self._slots:
                if slot.process is not None:
                    self._broker.recover_worker(manager=self.name, worker=self._worker_name(slot))
                    slot.process = None
            self._broker.deregister_manager(self.name)
        finally:
            self._broker.close()
            self._stopped.set()

    def _wait_for_workers(self, slots: list[_Slot]) -> None:
        """Wait for warm stops; kill what is left after the grace period or a cold request."""
        deadline = None if self.grace is None else time.monotonic() + self.grace
        for slot in slots:
            assert slot.process is not None
            while slot.process.is_alive():
                if self._cold.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    slot.process.kill()
                slot.process.join(timeout=0.1)
