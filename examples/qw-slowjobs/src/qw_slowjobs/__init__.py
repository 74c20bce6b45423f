"""qw-slowjobs: time every job and log the ones that take too long.

A complete qw plugin in one module. Installed, it is loaded by every ``qw run`` through
its entry point (``[project.entry-points.qw] slowjobs = "qw_slowjobs"``); nothing else
needs configuring. It shows the three things most plugins need:

* a **wrapper** around ``qw_job_run``, the way to time or trace a job (code before the
  ``yield`` runs before the target, code after it once the target returned or raised;
  for an ``async def`` target the ``yield`` gives back the job's coroutine, not yet run,
  so the wrapper returns a coroutine of its own that awaits it: the way for a plugin to
  await in a job's hooks);
* **settings** read in ``qw_plugins_loaded`` from ``qw run -o slowjobs.seconds=2``;
* state kept **per process**: hooks run in each worker process, so nothing here is
  shared between workers, and nothing needs to be.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from qw_core import Job, PluginConfig, WorkerInfo, hookimpl

__version__ = "0.1.0"

log = logging.getLogger("qw.slowjobs")

#: The setting (``qw run -o slowjobs.seconds=N``) and its default: jobs that run longer
#: than this many seconds are logged.
SETTING = "slowjobs.seconds"
DEFAULT_SECONDS = 1.0

_threshold = DEFAULT_SECONDS


@hookimpl
def qw_plugins_loaded(config: PluginConfig) -> None:
    """Read the threshold once per process (the manager's, and each worker's)."""
    global _threshold  # noqa: PLW0603 - one setting per process
    value = config.options.get(SETTING, DEFAULT_SECONDS)
    try:
        _threshold = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        log.warning("%s=%r is not a number of seconds; using %s", SETTING, value, DEFAULT_SECONDS)
        _threshold = DEFAULT_SECONDS


@hookimpl(wrapper=True)
def qw_job_run(job: Job, worker: WorkerInfo, target: Callable[..., Any]) -> Generator[None, object, object]:
    """Time the job around whatever runs it; log it when it is slow, whatever its outcome."""
    start = time.perf_counter()
    result: object = None
    try:
        result = yield
    finally:  # a plain job has run (or raised) by now; an async one has not started
        if not inspect.isawaitable(result):
            _report(job, worker, start)
    if inspect.isawaitable(result):
        return _timed(result, job, worker, start)
    return result


async def _timed(job_run: Awaitable[object], job: Job, worker: WorkerInfo, start: float) -> object:
    """Await an async job's run, then report it: its time is the awaited run."""
    try:
        return await job_run
    finally:
        _report(job, worker, start)


def _report(job: Job, worker: WorkerInfo, start: float) -> None:
    elapsed = time.perf_counter() - start
    if elapsed >= _threshold:
        log.warning(
            "slow job %s: %.3f s on %s (attempt %d; threshold %.3f s)",
            job.id,
            elapsed,
            worker.name,
            job.attempt,
            _threshold,
        )
