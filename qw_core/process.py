"""What runs inside a worker process: rebuild plugins, open the broker, run the loop.

Everything a worker process needs travels in one picklable :class:`WorkerSpec`, so the
same code path serves the ``fork`` and ``spawn`` start methods: with ``spawn`` a target
given as a string is imported afresh in each worker, and plugins are rebuilt from their
:class:`~qw_core.plugins.PluginConfig`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import attrs

from qw_core.backoff import Backoff
from qw_core.broker import Broker, BrokerFactory
from qw_core.errors import BrokerUnavailable, QwError
from qw_core.eventloops import DEFAULT_EVENT_LOOP
from qw_core.execution import is_async
from qw_core.models import DEFAULT_QUEUE
from qw_core.plugins import PluginConfig, make_plugin_manager
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.recycling import Recycling
from qw_core.results import DEFAULT_RESULT_TTL
from qw_core.status import JobStatus
from qw_core.worker import DEFAULT_PREFETCH, Worker, WorkerNotStarted

#: Exit code of a worker that could not start (a bad target or plugin), for people
#: reading a process list. The manager does not go by it (a target may exit with any
#: code): the worker says so in its status record, and the manager stops instead of
#: restarting it in a loop. (A broker that cannot be reached is waited for: the manager
#: reached it, so it is an outage.)
EXIT_CANNOT_START = 78  # EX_CONFIG
#: Exit code of a worker that stopped to be replaced (:mod:`qw_core.recycling`), for
#: people reading a process list; the manager goes by its status record, as above.
EXIT_RECYCLED = 75  # EX_TEMPFAIL


#: The GIL switch interval of a worker process, in seconds (Python's default is 0.005). A
#: worker running jobs at once is two threads or more handing work to each other (its loop
#: settles and takes; its event loop or its threads run the jobs), and a thread woken by
#: the other waits for the GIL until the other blocks or this interval runs out: at 5 ms a
#: job's end can wait that long to be settled and its slot refilled, and a reply for a
#: job's own I/O as long to be read. Measured with ``bench/profile_worker.py --io 20`` (100
#: jobs in flight that wait 20 ms): one worker drained 9-11% more at 0.5 ms. A worker that
#: runs one plain job at a time keeps Python's default (its target's own threads, if any,
#: are left as they were).
SWITCH_INTERVAL = 0.0005


@attrs.frozen(kw_only=True)
class WorkerSpec:
    """Everything a worker process is started with; picklable."""

    target: str | Callable[..., Any]
    broker_factory: BrokerFactory
    manager: str
    plugins: PluginConfig
    prefetch: int = DEFAULT_PREFETCH
    block_timeout: float = 1.0
    log_level: int = logging.INFO
    failed_limits: FailedLimits = DEFAULT_FAILED_LIMITS
    job_timeout: float | None = None
    concurrency: int | None = None
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    result_ttl: float = DEFAULT_RESULT_TTL
    recycling: Recycling = attrs.field(factory=Recycling)
    event_loop: str = DEFAULT_EVENT_LOOP


def _open_broker(spec: WorkerSpec, parent_pid: int, stop: _StopRequests) -> Broker | None:
    """Open the broker, waiting out an outage (the manager reached it, so it comes back).

    :return: the broker, or ``None`` if the manager died or a stop was asked for meanwhile.
    """
    backoff = Backoff()
    while True:
        try:
            return spec.broker_factory()
        except BrokerUnavailable as exc:
            if backoff.failures == 0:
                print(f"qw worker {spec.manager}.{os.getpid()}: {exc}; retrying", file=sys.stderr)
            time.sleep(backoff.next())
            if os.getppid() != parent_pid or stop.requested:
                return None


#: The signals that stop a worker or its manager (see :func:`worker_main`).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT})


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Within the block, the calling thread holds the stop signals back (they stay pending,
    not lost), and so does a process it forks, until :func:`worker_main` has put its own
    handlers in place and lets them through.

    Without it a worker forked from its manager runs the manager's handlers between the
    fork and its first line: a SIGTERM sent then (the manager stopping just after it started
    a worker, or replacing one) was taken by the manager's handler in the child and lost,
    and the worker, never told to stop, kept its manager waiting for it for ever.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not on Windows, which does not fork
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _StopRequests:
    """Remembers a stop asked for by a signal, and passes it on to the worker once it exists."""

    def __init__(self) -> None:
        self.requested = False
        self.worker: Worker | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.worker is not None:
            self.worker.request_stop()

    def watch(self, worker: Worker) -> None:
        self.worker = worker
        if self.requested:
            worker.request_stop()


class CannotStart(Exception):
    """The worker cannot start (a bad target or plugin): restarting it would fail the same way."""


def worker_main(spec: WorkerSpec, parent_pid: int, status: JobStatus | None = None, go: Any = None) -> None:
    """Entry point of a worker process; it ends the process (see :func:`_exit`).

    :param status: where to report the running job to the manager (time limits).
    :param go: an event the manager sets once the worker's first heartbeat is written;
        the worker takes no job before (so no reaper can take it for a dead one).
    """
    # Ctrl-C and Ctrl-\ reach the whole process group: they are the manager's to act on
    # (it stops us warmly, or kills us and puts our jobs back uncounted), not ours to die of.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    # SIGTERM and SIGHUP ask for a warm stop, from the first instant: a worker forked from
    # its manager inherits the manager's handlers, which would swallow a stop that comes
    # while it is still starting.
    stop = _StopRequests()
    signal.signal(signal.SIGTERM, stop.on_signal)
    signal.signal(signal.SIGHUP, stop.on_signal)
    if hasattr(signal, "pthread_sigmask"):  # held back since the fork (stop_signals_held): now ours
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if not logging.getLogger().handlers:  # spawn: nothing configured logging in this process
        logging.basicConfig(level=spec.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = _serve(spec, parent_pid, status, go, stop)
    except CannotStart as exc:
        print(f"qw worker {spec.manager}.{os.getpid()}: cannot start: {exc}", file=sys.stderr)
        if status is not None:
            status.cannot_start()
        code = EXIT_CANNOT_START
    except BaseException:
        traceback.print_exc()
        code = 1
    _exit(code)


def _serve(spec: WorkerSpec, parent_pid: int, status: JobStatus | None, go: Any, stop: _StopRequests) -> int:
    """Build the worker, wait for the manager's go, run it; the exit code.

    :raises CannotStart: the target or a plugin failed to load, or a ``qw_worker_started``
        plugin raised.
    """
    try:
        pm = make_plugin_manager(spec.plugins)
        broker = _open_broker(spec, parent_pid, stop)
        if broker is None:
            return 0
        worker = Worker(
            broker,
            spec.target,
            manager=spec.manager,
            hook=pm.hook,
            prefetch=spec.prefetch,
            block_timeout=spec.block_timeout,
            parent_pid=parent_pid,
            failed_limits=spec.failed_limits,
            job_timeout=spec.job_timeout,
            concurrency=spec.concurrency,
            queues=spec.queues,
            result_ttl=spec.result_ttl,
            status=status,
            recycling=spec.recycling,
            event_loop=spec.event_loop,
        )
    except Exception as exc:
        if not isinstance(exc, QwError):
            traceback.print_exc()
        raise CannotStart(exc) from exc

    if worker.concurrency > 1 or is_async(worker.target):  # threads hand work to each other
        sys.setswitchinterval(SWITCH_INTERVAL)
    stop.watch(worker)
    try:
        while go is not None and not go.wait(0.5):
            if os.getppid() != parent_pid or worker.stopping:
                return 0
        try:
            worker.run()
        except WorkerNotStarted as exc:
            raise CannotStart(exc) from exc
    finally:
        broker.close()
    if worker.recycled is not None:
        if status is not None:
            status.recycled()
        return EXIT_RECYCLED
    return 0


def _exit(code: int) -> None:
    """End the worker process now, with ``code``, once its output is flushed.

    Not a return into ``multiprocessing``, which would wait for every non-daemon thread: a
    thread a target started and left running must not keep a stopped worker alive.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
