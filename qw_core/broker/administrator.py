"""The administrator's role: acting on the failed registry, on stray queues, on the schema.

What ``qw failed requeue``/``purge``, ``qw move`` and ``qw migrate`` (and the dashboard's
buttons) do. Each action is atomic per job and safe to run while workers run.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

from qw_core.broker.inspector import Inspector
from qw_core.errors import ConfigurationError

#: Jobs per batch of the default :meth:`Administrator.requeue_all_failed` (one progress report each).
_DEFAULT_BATCH = 100


class Administrator(Inspector):
    """Requeue or delete failed jobs, move jobs off a queue nobody serves, migrate.

    An administrator reads what it acts on (``qw failed requeue --exc ValueError`` pages
    through the registry, ``qw move`` checks the names), so this role is an
    :class:`~qw_core.broker.Inspector` too.

    The contract, for every method below: each job moves atomically and at most once
    (concurrent calls and retried calls never duplicate one); a job that is queued, held
    or delayed is never overwritten; bulk actions work in bounded batches so that a large
    registry never holds the server up. Nothing here blocks on a worker.
    """

    @abc.abstractmethod
    def requeue_failed(self, job_id: str) -> bool:
        """Move a failed job back onto the queue it came from, attempts reset.

        Atomic and idempotent: a second call (or a concurrent one) returns ``False``. So
        does a call while a job with the same id is queued, held or delayed (its data is
        not overwritten; the failed entry stays), and, for a job with a unique key, while
        another job holds that key (the entry stays; the requeued job takes the key).
        """

    @abc.abstractmethod
    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        """Delete failed jobs from the registry: ``job_ids``, or every one for ``None``
        (as :meth:`purge_all_failed` does).

        Ids that are not in the registry are ignored. Returns how many were deleted.
        """

    def requeue_all_failed(self, *, progress: Callable[[Sequence[str]], None] | None = None) -> int:
        """Requeue every job the failed-job registry holds when this is called, the oldest
        failure first, each as :meth:`requeue_failed` does (atomically, attempts reset);
        return how many were requeued.

        A job that cannot be requeued (a job with its id is queued, held or delayed, or its
        queue cannot take it) stays in the registry and is passed over, never tried again in
        a loop; so is a job that fails again while this runs (one it requeued, say): each job
        is requeued at most once per call. The registry may be large, so the work is done
        in batches, each job atomic but not the whole: ``progress``, if given, is called
        after each batch with the ids it requeued (a command prints them as they come).

        This default lists the whole registry (:meth:`failed_jobs`) and requeues one job at
        a time; a backend that can requeue in bounded batches on its server overrides it
        (Redis does), so that its client never holds the registry.
        """
        listed = [entry.job.id for entry in self.failed_jobs(limit=max(1, self.failed_count()))]
        listed.reverse()  # oldest first
        requeued = 0
        for start in range(0, len(listed), _DEFAULT_BATCH):
            done = [
                job_id for job_id in listed[start : start + _DEFAULT_BATCH] if self.requeue_failed(job_id)
            ]
            requeued += len(done)
            if progress is not None:
                progress(done)
        return requeued

    def purge_all_failed(self, *, progress: Callable[[int], None] | None = None) -> int:
        """Delete every job the failed-job registry holds when this is called (those that
        fail while it runs are kept); return how many were deleted.

        Done in batches as :meth:`requeue_all_failed` is: ``progress``, if given, is called
        after each with how many it deleted. This default is one :meth:`purge_failed` call;
        a backend with a large registry on a server overrides it (Redis does).
        """
        purged = self.purge_failed(None)
        if progress is not None:
            progress(purged)
        return purged

    @abc.abstractmethod
    def move_queued(self, name: str, *, to: str | None = None) -> int:
        """Move every job waiting under ``name`` (a manager's queue, or the list of a
        worker that is not running) to the back of manager ``to``'s queue (``None``: the
        shared queue), keeping their order; return how many moved.

        :raises WorkerRunning: ``name`` is a running worker's (registered, or beating):
            its list holds jobs it took; nothing is moved.
        """

    @classmethod
    def apply_migrations(cls, url: str | None = None) -> list[str]:
        """Create or upgrade the schema this backend keeps at ``url`` to what this code
        needs, safely when several processes do it at once; one line per migration
        applied (``[]``: it was up to date).

        Only for a backend whose ``capabilities.migrations`` is true (it may also apply
        them itself when it opens, as the PostgreSQL backend does by default).

        :raises ConfigurationError: the backend keeps no schema, or the stored one is
            newer than this code.
        :raises BrokerUnavailable: the server cannot be reached.
        """
        raise ConfigurationError(f"the {cls.__name__} backend keeps no schema: there is nothing to migrate")

    @classmethod
    def migration_script(cls, url: str | None = None) -> str:
        """The statements :meth:`apply_migrations` would run at ``url`` now, as text a
        person can review and run by hand (empty: nothing to do).

        :raises ConfigurationError: the backend keeps no schema (see :meth:`apply_migrations`).
        """
        raise ConfigurationError(f"the {cls.__name__} backend keeps no schema: there is nothing to migrate")
