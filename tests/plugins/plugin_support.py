"""Helpers for the lifecycle plugin tests: a worker in a thread, outcome recording, polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from qwtest_redis import free_port, redis_url, shared_client  # noqa: F401  (the tests here import them from here)
from qwtest_wait import wait_for  # noqa: F401

from qw_core import Job, Outcome, PluginConfig, WorkerInfo, hookimpl, make_plugin_manager
from qw_core.broker import Broker
from qw_core.worker import Worker

#: The databases these tests own (flushed before and after each test using them).
REDIS_DB = 1
CLI_REDIS_DB = 2


class Recorder:
    """A plugin that records each run's outcome and attempt, in the order they finish."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int, Outcome, float]] = []  # (job id, attempt, outcome, when)
        self._lock = threading.Lock()

    @hookimpl
    def qw_job_finished(self, job: Job, worker: WorkerInfo, outcome: Outcome, duration: float) -> None:
        with self._lock:
            self.runs.append((job.id, job.attempt, outcome, time.monotonic()))

    def outcomes(self, job_id: str) -> list[Outcome]:
        with self._lock:
            return [outcome for run_id, _, outcome, _ in self.runs if run_id == job_id]

    def settled(self, job_id: str) -> bool:
        """Whether the job's last run ended it (succeeded, failed or dropped)."""
        outcomes = self.outcomes(job_id)
        return bool(outcomes) and outcomes[-1] is not Outcome.RETRIED


@contextmanager
def running_worker(
    broker: Broker, target: Callable[..., Any] | str, config: PluginConfig | None = None, **kwargs: Any
) -> Iterator[Recorder]:
    """A worker on ``broker`` in a thread (with a broker of its own), recording outcomes."""
    recorder = Recorder()
    pm = make_plugin_manager(config or PluginConfig(entry_points=False), extra=[recorder])
    own = broker.factory()()
    worker = Worker(own, target, manager="m1", name="m1.1", hook=pm.hook, block_timeout=0.05, **kwargs)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        worker.request_stop()
        thread.join(10)
        own.close()
