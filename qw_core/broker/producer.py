"""The producer's role: queue jobs, then read what they returned.

What a program that sends work needs, and nothing else: a web request handler, a
:class:`~qw_core.tasks.Router`, ``qw enqueue``. Results are read here too, since the
producer of a job is who waits for its answer (:class:`~qw_core.tasks.TaskHandle`).
"""

from __future__ import annotations

import abc
import datetime
from collections.abc import Sequence

from qw_core.broker.role import Role
from qw_core.errors import UniqueJobsUnsupported
from qw_core.models import Job
from qw_core.results import JobResult
from qw_core.unique import Queued, UniqueSetting, unique_of, with_unique


class Producer(Role):
    """Queue jobs (now, delayed, or unique by a key) and read their results.

    The contract, for every method below: a job is queued whole or not at all (never data
    without a queue entry); queueing is idempotent per job id, so a call retried after a
    timeout queues nothing twice; nothing here blocks but :meth:`wait_result`, which
    blocks in the backend (no polling in the caller). Queueing never waits for a worker.
    """

    @abc.abstractmethod
    def queue_jobs(self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None) -> list[str]:
        """Queue ``jobs``, each on the queue its ``manager``/``worker`` fields name; their ids.

        A job with ``worker`` set goes on that worker's held list; else with ``manager``
        set, on that manager's queue; else on the shared queue. Atomic per job: a job is
        either fully queued or not at all, never data without a queue entry. Jobs are
        taken in the order given (first in, first out per queue).

        Idempotent per job: a job whose id is queued, held or delayed already is left as
        it is (a second copy in one batch too), so a call retried after a timeout whose
        first attempt did go through queues nothing twice. (An id that is finished, or
        only in the failed registry, is queued anew.)

        On a backend with ``capabilities.unique``, a job whose ``meta["unique"]`` key is
        held by another job (see :meth:`queue_jobs_unique`) is not stored: the holder's id
        stands in its place in the list returned.

        With ``delay`` above 0 the jobs first wait, delayed, and each is moved to the back
        of its queue once ``delay`` seconds have passed (by the backend's clock); with
        ``at``, once that time has come (seconds since the epoch: the time itself is
        stored, so a producer that is slow to send it does not delay the jobs further).
        Moving a due job is atomic and happens exactly once however many processes use the
        broker: a job is never both delayed and queued, and never lost in between. A
        blocked :meth:`Consumer.take` notices a job that comes due while it waits. While delayed, a
        job is listed by :meth:`Inspector.delayed_job_ids` and readable with :meth:`Inspector.get_job`.

        :param delay: seconds to wait before the jobs may be taken; ``0`` queues them now.
        :param at: when the jobs may be taken instead (seconds since the epoch). Not with
            ``delay``.
        :raises InvalidJob: a job's data cannot be stored, or a job queued on a worker
            directly is delayed (before anything is written).
        :raises InvalidName: a named manager or worker is not a valid name.
        :raises ConfigurationError: both ``delay`` and ``at`` are given.
        """

    def queue_job(
        self,
        job: Job,
        *,
        delay: float = 0.0,
        at: datetime.datetime | None = None,
        unique: UniqueSetting = None,
    ) -> str:
        """Queue one job; see :meth:`queue_jobs`. Returns its id.

        :param delay: seconds to wait before the job may be taken.
        :param at: when the job may be taken instead (a timezone-aware datetime, or a naive
            one in local time); a time in the past queues it now. Not with ``delay``.
        :param unique: a unique key (held until the job ends) or a
            :class:`~qw_core.unique.Unique`: if a job holding that key is queued, delayed or
            running, nothing is queued and that job's id is returned instead (see
            :meth:`queue_job_unique`, which says which happened).
        """
        if unique is not None:
            return self.queue_job_unique(job, unique, delay=delay, at=at).id
        [job_id] = self.queue_jobs([job], delay=delay, at=None if at is None else at.timestamp())
        return job_id

    def queue_job_unique(
        self,
        job: Job,
        unique: UniqueSetting = None,
        *,
        delay: float = 0.0,
        at: datetime.datetime | None = None,
    ) -> Queued:
        """Queue one job that is unique by ``unique`` (or by the ``meta["unique"]`` it
        carries); say whether it was queued, or which job holds its key.

        :param unique: as for :meth:`queue_job`; ``None``: the job's own ``meta["unique"]``
            (a job without one is simply queued).
        :raises UniqueJobsUnsupported: the backend cannot keep jobs unique (nothing queued).
        :raises ConfigurationError: ``unique`` is not valid.
        """
        job = with_unique(job, unique)
        when = None if at is None else at.timestamp()
        if unique_of(job) is None:
            [job_id] = self.queue_jobs([job], delay=delay, at=when)
            return Queued(job_id, True)
        [queued] = self.queue_jobs_unique([job], delay=delay, at=when)
        return queued

    def queue_jobs_unique(
        self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None
    ) -> list[Queued]:
        """:meth:`queue_jobs`, saying of each job whether it was queued.

        A job with a unique key (``meta["unique"]``, see :mod:`qw_core.unique`) is queued
        only if no other job holds that key; otherwise nothing of it is stored and its
        entry is the holder's id with ``created`` false. Checking the key and queueing the
        job are one atomic step: of any number of producers racing with one key, exactly
        one queues a job, and every other gets its id. The key is taken (held by this job)
        in that step too. A job that holds a key released by nobody (it vanished) does not
        hold it. A call retried after a timeout finds its own job holding the key: its
        entry says ``created`` (the job is this call's). Jobs of one call with one key:
        one is queued, the others get its id. A job without a key is queued as by
        :meth:`queue_jobs`.

        What releases a key: see :mod:`qw_core.unique` (the job ending, failing for good,
        or being taken by a worker, by mode; a throttle's TTL). A retry and a recovery
        keep it; a requeue from the failed registry takes it again, and is refused while
        another job holds it (:meth:`Administrator.requeue_failed`).

        This default raises: a backend declares ``capabilities.unique`` and overrides it.

        :raises UniqueJobsUnsupported: the backend cannot keep jobs unique (nothing queued).
        """
        raise UniqueJobsUnsupported(f"{self.describe()} cannot keep jobs unique; queue them without a key")

    @abc.abstractmethod
    def get_result(self, job_id: str) -> JobResult | None:
        """What finished job ``job_id`` returned, while it is kept; ``None`` if nothing is
        (not finished yet, returned ``None``, failed, expired, or no such job)."""

    @abc.abstractmethod
    def wait_result(self, job_id: str, timeout: float) -> JobResult | None:
        """:meth:`get_result`, waiting up to ``timeout`` seconds for the result to be
        kept. Blocks in the backend (no polling loop in the caller); ``None`` when the wait
        runs out. A result kept before the call is returned at once."""
