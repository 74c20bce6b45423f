"""A :class:`~qw_core.worker.Worker` on the memory broker, run in a thread of the test
process: for tests of what one worker does with hostile jobs, where a worker process
would hide the job's effects from the test."""

from __future__ import annotations

import threading
from typing import Any

from qw_core import PluginConfig, make_plugin_manager
from qw_core.memory import MemoryBroker
from qw_core.worker import Worker


def start_worker(broker: MemoryBroker, target: Any, **kwargs: Any) -> tuple[Worker, threading.Thread]:
    """Worker ``m.1`` of manager ``m`` (no plugins from entry points), running."""
    pm = make_plugin_manager(PluginConfig(entry_points=False))
    worker = Worker(broker, target, manager="m", name="m.1", hook=pm.hook, block_timeout=0.2, **kwargs)
    thread = threading.Thread(target=worker.run, daemon=True)  # daemon: a hung worker must not hang pytest
    thread.start()
    return worker, thread


def stop_worker(worker: Worker, thread: threading.Thread, timeout: float = 10.0) -> None:
    """Ask the worker to stop and wait up to ``timeout`` seconds for its thread."""
    worker.request_stop()
    thread.join(timeout)
