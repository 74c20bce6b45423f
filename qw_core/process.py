"""What runs inside a worker process: rebuild plugins, open the broker, run the loop.

Everything a worker process needs travels in one picklable :class:`WorkerSpec`, so the
same code path serves the ``fork`` and ``spawn`` start methods: with ``spawn`` a target
given as a string is imported afresh in each worker, and plugins are rebuilt from their
:class:`~qw_core.plugins.PluginConfig`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import attrs

from qw_core.broker import BrokerFactory
from qw_core.errors import QwError
from qw_core.plugins import PluginConfig, make_plugin_manager
from qw_core.worker import Worker

#: Exit code of a worker that could not start (bad target, unreachable broker): the
#: manager stops instead of restarting it in a loop.
EXIT_CANNOT_START = 78  # EX_CONFIG


@attrs.frozen(kw_only=True)
class WorkerSpec:
    """Everything a worker process is started with; picklable."""

    target: str | Callable[..., Any]
    broker_factory: BrokerFactory
    manager: str
    plugins: PluginConfig
    prefetch: int = 1
    block_timeout: float = 1.0
    log_level: int = logging.INFO


def worker_main(spec: WorkerSpec, parent_pid: int) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the manager, which stops us warmly
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)  # not the manager's handler, inherited through fork
    if not logging.getLogger().handlers:  # spawn: nothing configured logging in this process
        logging.basicConfig(level=spec.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        pm = make_plugin_manager(spec.plugins)
        broker = spec.broker_factory()
        worker = Worker(
            broker,
            spec.target,
            manager=spec.manager,
            hook=pm.hook,
            prefetch=spec.prefetch,
            block_timeout=spec.block_timeout,
            parent_pid=parent_pid,
        )
    except QwError as exc:
        print(f"qw worker {spec.manager}.{os.getpid()}: {exc}", file=sys.stderr)
        sys.exit(EXIT_CANNOT_START)

    def on_term(signum: int, frame: FrameType | None) -> None:
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        worker.run()
    finally:
        broker.close()
