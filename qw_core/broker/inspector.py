"""The inspector's role: every read a person's tool needs, and nothing that writes.

``qw status``, ``qw job``, ``qw failed``, the dashboard and the metrics scrape read the
broker through these. Each read is bounded: listings are paged and a backend reads any
range in bounded steps, so inspecting a deep queue never holds the server up for the
workers; counts that a backend cannot keep cheaply default to counting a listing.
"""

from __future__ import annotations

import abc

from qw_core.broker.checks import check_minutes, check_page
from qw_core.broker.role import Role
from qw_core.models import FailedJob, Job, JobsRun, JobState, RunningJob, ScheduleInfo, State


class Inspector(Role):
    """Read-only queries: where jobs are, who runs, what failed, what is stuck.

    The contract, for every method below: nothing is written; each call reads the broker
    as it is then (a listing or a job's status is not a snapshot across calls: a job moves
    on while its answer travels, so programs wait for results with
    :meth:`Producer.wait_result <qw_core.broker.Producer.wait_result>`, never by polling a
    status); nothing blocks.
    """

    @abc.abstractmethod
    def job_status(self, job_id: str) -> JobState:
        """Where job ``job_id`` is now: queued (on which queue), delayed (until when), held
        by a worker (which one, if it is registered), failed (why), succeeded (when, and
        its result if any, while they are kept: see ``keep_finished`` in :meth:`Consumer.take` and
        :meth:`Consumer.finish_with_result`), or unknown. Reads only, with a few commands; for people and
        tools (``qw job ID``), not for a program to synchronise on (a job moves on while
        its answer travels: wait for a result with :meth:`Producer.wait_result`)."""

    @abc.abstractmethod
    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        """The token of ``name``'s heartbeat and the seconds it has left, or ``None`` if it
        has none (never beat, lapsed, or deregistered). A manager about to start under a
        name asks, to tell whether another one is using it."""

    @abc.abstractmethod
    def managers(self) -> list[str]:
        """Names of the running managers, sorted."""

    @abc.abstractmethod
    def workers(self, manager: str) -> list[str]:
        """Names of ``manager``'s running workers, sorted."""

    def running_jobs(self, manager: str) -> list[RunningJob]:
        """The jobs ``manager``'s workers have in hand now, each with since when and the
        queue it came from, as its last heartbeat said (:meth:`Membership.beat` with ``running``),
        by worker then by job id. Reads only; for people (a dashboard's "running" counts
        and what each worker runs now).

        A job a worker took but has not begun (the rest of its batch) is held, not running:
        :meth:`held_job_ids` lists those too. This default asks :meth:`job_status` about
        each held job of each worker (a few calls per job: a worker holds a batch at most)
        and keeps those with a known ``since``; a backend that keeps the heartbeat's record
        itself overrides it (memory and Redis do).
        """
        found: list[RunningJob] = []
        for worker in self.workers(manager):
            for job_id in sorted(self.held_job_ids(worker, limit=self.capabilities.max_take)):
                state = self.job_status(job_id)
                if state.state is State.HELD and state.since is not None:
                    found.append(
                        RunningJob(job_id=job_id, worker=worker, since=state.since, queue=state.queue)
                    )
        return found

    @abc.abstractmethod
    def queued_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """Ids waiting on ``manager``'s queue, on named queue ``queue``, or (neither, or
        ``queue="default"``) on the shared queue, next to run first (see :func:`check_listed`).

        A page of the listing: the ``limit`` ids (``None``: all the rest) from position
        ``offset`` on, ``0`` being the next to run. Listings are paged because a queue may
        hold millions of ids: a listing costs what its page costs, and a backend reads any
        range in bounded steps (Redis: at most 1,000 ids a command), so that listing a deep
        queue never holds its server up for the workers. Each call reads the queue as it is
        then; pages of a queue that changes between calls may overlap or miss ids, and a
        call for a long range need not be one snapshot either.

        :raises ValueError: ``offset`` or ``limit`` is negative (see :func:`check_page`).
        """

    def queued_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        """How many ids wait on a queue, chosen as for :meth:`queued_job_ids`.

        Counts :meth:`queued_job_ids`; a backend that can count without listing (Redis:
        ``LLEN``) overrides this, so a status command or a metrics scrape stays cheap
        however deep the queue.
        """
        return len(self.queued_job_ids(manager, queue=queue))

    @abc.abstractmethod
    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        """Ids on ``worker``'s held list, paged as :meth:`queued_job_ids` (in the backend's order)."""

    def held_count(self, worker: str) -> int:
        """How many ids ``worker`` holds; see :meth:`queued_count`."""
        return len(self.held_job_ids(worker))

    @abc.abstractmethod
    def delayed_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """Ids waiting for their due time that then go to a queue, chosen as for
        :meth:`queued_job_ids`, the soonest due first, paged as :meth:`queued_job_ids` (``offset`` ``0`` is
        the soonest due). Delayed retries are listed too."""

    def delayed_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        """How many ids wait for their due time to go to a queue, chosen as for
        :meth:`queued_job_ids`."""
        return len(self.delayed_job_ids(manager, queue=queue))

    @abc.abstractmethod
    def named_queues(self) -> list[str]:
        """The named queues jobs were queued on (delayed ones included), sorted; not the
        shared queue. A queue stays listed once used, empty or not."""

    @abc.abstractmethod
    def get_job(self, job_id: str) -> Job | None:
        """The stored job (queued, held, delayed or failed), or ``None`` if there is none."""

    @abc.abstractmethod
    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        """The most recently failed jobs, newest first."""

    def failed_jobs_page(self, *, offset: int = 0, limit: int = 100) -> list[FailedJob]:
        """A page of the failed-job registry, newest first: the ``limit`` entries from
        position ``offset`` on (``0`` is the newest), as :meth:`failed_jobs` lists them.

        A dashboard pages a registry of thousands this way: a page costs what its entries
        cost, however deep it is (a backend reads the range in bounded steps). Pages of a
        registry that changes between calls may overlap or miss entries.

        This default reads the ``offset + limit`` newest entries through :meth:`failed_jobs`
        and drops the first ``offset``; a backend that can read a range overrides it (memory
        and Redis do).

        :raises ValueError: ``offset`` or ``limit`` is negative (see :func:`check_page`).
        """
        check_page(offset, limit)
        if limit == 0:
            return []
        return self.failed_jobs(limit=offset + limit)[offset:]

    @abc.abstractmethod
    def failed_count(self) -> int:
        """How many jobs the failed-job registry holds."""

    @abc.abstractmethod
    def get_failed(self, job_id: str) -> FailedJob | None:
        """The failed job ``job_id`` as the registry keeps it, or ``None`` if it has none."""

    @abc.abstractmethod
    def job_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """Ids of the jobs this backend knows (queued, delayed, held, failed, or with a kept
        result) that start with ``prefix``, at most ``limit`` of them, in no particular
        order: see :meth:`failed_ids_with_prefix`. May read every key of the backend, in
        bounded steps (Redis: ``SCAN``)."""

    @abc.abstractmethod
    def failed_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """Ids in the failed registry that start with ``prefix``, at most ``limit`` of them
        (in no particular order), so that a person can type the start of an id, as git
        takes the start of a commit's hash. May read the whole registry, in bounded steps.
        """

    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        """How many jobs each manager's workers began per minute (:meth:`Membership.note_jobs_run`),
        for the last ``minutes`` minutes up to and including the current one, by the
        backend's clock, oldest first: one entry per minute, with no counts for a minute
        nobody noted any. ``[]`` when the backend keeps none (this default).

        :raises ValueError: ``minutes`` is not between 1 and 60.
        """
        check_minutes(minutes)
        return []

    @abc.abstractmethod
    def stray_queues(self) -> dict[str, int]:
        """Queues holding jobs under a name no running manager or worker has, with how many
        each holds: jobs queued for a manager that never ran (a misspelt name, queued with
        ``--force``) or sent to a worker that is gone. Nothing takes them until a process
        of that name runs, or :meth:`Administrator.move_queued` moves them.

        A backend may find only the names jobs were queued to through qw (Redis: the ones
        in ``qw:queues``).
        """

    def problems(self) -> list[str]:
        """Stored state that keeps jobs from moving, one line each (``qw status`` shows them).

        For example a Redis queue key that some other program made a string: workers skip
        it and serve the other queues, and this says so. Empty by default.
        """
        return []

    def setup_warnings(self) -> list[str]:
        """Ways the server is set up that can lose jobs (a manager logs each at start).

        For example a Redis whose ``maxmemory-policy`` may evict keys. Empty by default.
        """
        return []

    @abc.abstractmethod
    def schedules(self) -> list[ScheduleInfo]:
        """The schedules running managers declare, sorted by id: each with its next and
        last run and the manager that enqueued its last tick. ``[]`` on a backend that
        does not keep schedules.

        A schedule that managers declare in different ways (another cron expression, zone,
        queue or data under one id) is listed once per way, each with ``conflict`` set.
        Built from the :class:`~qw_core.broker.Periodic` reads by :class:`~qw_core.broker.Broker`.
        """
