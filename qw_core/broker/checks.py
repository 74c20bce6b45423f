"""Checks each backend makes of its callers' arguments, before anything is read or written.

Written once here so that every backend refuses the same arguments with the same message.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from qw_core.errors import ConfigurationError, InvalidJob
from qw_core.models import DEFAULT_QUEUE, Job


def check_listed(manager: str | None, queue: str | None) -> tuple[str | None, str | None]:
    """The ``manager`` and ``queue`` of a listing (:meth:`~qw_core.broker.Inspector.queued_job_ids` and the
    like), with the shared queue's name (:data:`~qw_core.models.DEFAULT_QUEUE`) as no queue.

    :raises ValueError: both are given (a queue belongs to a manager or is named, not both).
    """
    if queue == DEFAULT_QUEUE:
        queue = None
    if manager is not None and queue is not None:
        raise ValueError(f"list manager {manager!r}'s queue or queue {queue!r}, not both")
    return manager, queue


def check_page(offset: int, limit: int | None) -> None:
    """Check the ``offset`` and ``limit`` of a paged listing (:meth:`~qw_core.broker.Inspector.queued_job_ids`
    and the like); for backends, before anything is read.

    :raises ValueError: either is negative.
    """
    if offset < 0:
        raise ValueError(f"a listing's offset must not be negative, not {offset}")
    if limit is not None and limit < 0:
        raise ValueError(f"a listing's limit must not be negative, not {limit}")


#: The most minutes :meth:`~qw_core.broker.Inspector.jobs_run` reads back (backends keep an hour at least).
MAX_MINUTES = 60


def check_minutes(minutes: int) -> None:
    """Check the ``minutes`` of :meth:`~qw_core.broker.Inspector.jobs_run`; for backends,
    before anything is read.

    :raises ValueError: not between 1 and :data:`MAX_MINUTES`.
    """
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be between 1 and {MAX_MINUTES}, not {minutes}")


#: The longest a job may be delayed, in seconds (100 years): anything longer is a mistake
#: (a unit or a number of digits), and a job that waits for ever is a lost one.
MAX_DELAY = 100 * 365 * 86400.0


def check_delay(jobs: Sequence[Job], delay: float, at: float | None) -> bool:
    """Check the ``delay``/``at`` of a :meth:`~qw_core.broker.Producer.queue_jobs` call; whether the jobs wait
    (not for an ``at`` that has passed: those are queued at once).

    For backends, before anything is written. A job queued on a worker directly cannot
    wait: it is that worker's at once.

    :raises ConfigurationError: both are given, or a delay that is not a finite number, or
        one longer than :data:`MAX_DELAY` (or an ``at`` further ahead).
    :raises InvalidJob: naming the first job queued on a worker that would wait.
    """
    if at is not None and delay:
        raise ConfigurationError("give delay or at, not both")
    for value in (delay, at):
        if value is not None and not math.isfinite(value):
            raise ConfigurationError(f"a delay or due time must be a finite number of seconds, not {value!r}")
    now = time.time()
    if delay > MAX_DELAY or (at is not None and at - now > MAX_DELAY):
        raise ConfigurationError(f"a job may be delayed by at most {MAX_DELAY / 86400 / 365:g} years")
    waits = delay > 0 or (at is not None and at > now)
    if waits:
        for job in jobs:
            if job.worker is not None:
                raise InvalidJob(
                    f"job {job.id} is queued on worker {job.worker} directly and cannot be delayed"
                )
    return waits
