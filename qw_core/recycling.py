"""Worker recycling: a worker that ran N jobs, or grew past a memory bound, is replaced.

A target with a leaky C extension or a cache that only grows makes its worker process
bigger with every job. ``qw run --max-jobs-per-worker N`` and ``--max-worker-memory MB``
(``Manager(max_jobs_per_worker=, max_worker_memory=)``) bound that: after each job it
settles, a worker checks the bounds; once it passes one it takes nothing more, lets the
jobs in flight end, puts back the ones it had taken and not started (at the front of
their queues, uncounted), logs one line saying why, and exits. It tells its manager so
in its status record (:meth:`qw_core.status.JobStatus.recycled`), never by its exit code
alone (a target may exit with any code), and the manager starts another at once, without
the back-off that slows a worker that keeps crashing, and without counting it as one
(``qw_worker_died`` does not fire). Nothing is lost: a recycled worker exits as a warm
stop does.

With N jobs per worker, a worker never takes more jobs than it has left to run (its
prefetch is cut down to them), so none is put back just to be taken again.

Memory is the process's resident set size (RSS) *now*, read from ``/proc/self/statm`` on
Linux after each job (a read of a few microseconds, only when a bound is set). Where that
file does not exist (macOS, the BSDs), it is the *peak* RSS from ``getrusage``
(``ru_maxrss``), which never goes down: a worker there is recycled once it ever grew past
the bound, even if it gave the memory back since, which is what Celery's
``worker_max_memory_per_child`` does everywhere. Windows has neither, and is not
supported by qw's manager anyway.

Peers: Celery's ``worker_max_tasks_per_child`` and ``worker_max_memory_per_child`` (the
latter checked after each task, with the peak RSS); gunicorn's ``max_requests`` with a
jitter. qw checks current memory where it can, so that a worker that freed what a big job
used is not replaced for nothing.
"""

from __future__ import annotations

import os
import resource
import sys

import attrs

from qw_core.errors import ConfigurationError

#: Bytes in the megabyte of ``--max-worker-memory`` (MiB, as ``ps`` and ``top`` count).
MB = 1024 * 1024
_STATM = "/proc/self/statm"


def current_rss() -> int | None:
    """This process's resident set size in bytes: the current one on Linux, else the peak
    (see the module's docstring); ``None`` if it cannot be read."""
    try:
        with open(_STATM, "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):
        return None
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB elsewhere


def _positive(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive whole number, not {value!r}")
    return value


def _jobs(value: int | None) -> int | None:
    return _positive("the most jobs per worker", value)


def _megabytes(value: int | None) -> int | None:
    return _positive("the most memory per worker (MB)", value)


@attrs.frozen
class Recycling:
    """When a worker is replaced.

    :param max_jobs: after this many jobs (``None``: never).
    :param max_memory: once its RSS is over this many megabytes (MiB; ``None``: never).
    :raises ConfigurationError: a bound that is not a positive whole number.
    """

    max_jobs: int | None = attrs.field(default=None, converter=_jobs)
    max_memory: int | None = attrs.field(default=None, converter=_megabytes)

    def __bool__(self) -> bool:
        return self.max_jobs is not None or self.max_memory is not None

    def budget(self, ran: int) -> int | None:
        """How many more jobs a worker that ran ``ran`` may take (``None``: no bound)."""
        return None if self.max_jobs is None else max(0, self.max_jobs - ran)

    def reason(self, ran: int) -> str | None:
        """Why a worker that ran ``ran`` jobs is to be replaced now, or ``None``."""
        if self.max_jobs is not None and ran >= self.max_jobs:
            return f"ran {ran} jobs (the most per worker: {self.max_jobs})"
        if self.max_memory is not None:
            rss = current_rss()
            if rss is not None and rss > self.max_memory * MB:
                return f"uses {rss / MB:.0f} MB of memory (the most per worker: {self.max_memory} MB)"
        return None
