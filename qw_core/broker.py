"""The backend boundary: the abstract :class:`Broker` every backend implements.

A broker only moves data. It never fires hooks, applies retry policy or loads targets:
the worker and manager do that above it, so a new backend cannot forget to (dramatiq's
Redis broker emits its own events, which every broker must then remember to do).

The model is the original qw's, generalised:

* a **shared queue** any worker may take from (``all:jobs`` in Redis);
* one **manager queue** per manager, taken from only by that manager's workers, before
  the shared queue (``<m>:jobs``);
* one **held list** per worker (``<w>:jobs``): a job is on it from the moment the worker
  takes it until it is finished, failed, retried or released. Jobs may also be queued on
  a held list directly; a worker takes those first.

Every method is designed so that a networked backend can serve it in one round trip:
:meth:`take` finishes the jobs a worker just completed and takes the next ones in the same
call. Whatever a worker holds when it dies stays on its held list until
:meth:`recover_worker` puts it back, so no job is lost to a crash.

Differences between backends are declared in :class:`Capabilities`, never discovered
with ``isinstance``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import attrs

from qw_core.models import FailedJob, Failure, Job


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a backend can do, for the core and the contract tests to consult.

    :param multi_host: managers on different hosts may share the broker.
    :param max_take: the largest batch :meth:`Broker.take` will hand back in one call.
    :param delayed: :meth:`Broker.retry_job` honours a delay itself.
    :param shared_by_url: another process opening :meth:`Broker.from_url` sees the same
        jobs (false for the in-memory backend, whose jobs live in one process), so a
        command such as ``qw enqueue`` can refuse instead of queuing into nowhere.
    """

    multi_host: bool
    max_take: int = 100
    delayed: bool = True
    shared_by_url: bool = True


#: Opens a broker; must be picklable so worker processes started with ``spawn`` can call it.
BrokerFactory = Callable[[], "Broker"]


class Broker(abc.ABC):
    """Where jobs wait, who holds them, and who is running.

    Names: manager and worker names are checked with :meth:`check_name` before anything
    is written. A worker's name is ``<manager>.<pid>``, so a worker's manager is the part
    of its name before the last dot; this is where a job queued directly on a worker goes
    back to when it is retried, released, recovered or requeued.

    Thread safety: one broker object serves one thread. Open another (through
    :meth:`factory`) for another thread or process.
    """

    #: Set by each backend class.
    capabilities: Capabilities

    # -- producing -------------------------------------------------------------------

    @abc.abstractmethod
    def queue_jobs(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs``, each on the queue its ``manager``/``worker`` fields name.

        A job with ``worker`` set goes on that worker's held list; else with ``manager``
        set, on that manager's queue; else on the shared queue. Atomic per job: a job is
        either fully queued or not at all, never data without a queue entry. Jobs are
        taken in the order given (first in, first out per queue).

        :raises InvalidJob: a job's data cannot be stored (before anything is written).
        :raises InvalidName: a named manager or worker is not a valid name.
        """

    def queue_job(self, job: Job) -> None:
        """Queue one job; see :meth:`queue_jobs`."""
        self.queue_jobs([job])

    # -- consuming -------------------------------------------------------------------

    @abc.abstractmethod
    def take(
        self,
        *,
        manager: str,
        worker: str,
        finished: Sequence[str] = (),
        held: Sequence[str] = (),
        limit: int = 1,
        timeout: float = 0.0,
    ) -> list[Job]:
        """Finish ``finished``, then take up to ``limit`` jobs for ``worker``.

        Finishing is guarded: a job id is removed (with its data) only if it is still on
        ``worker``'s held list; a job that was recovered and handed to someone else
        meanwhile is left alone.

        Jobs are taken, in this order, from: ids on ``worker``'s held list that are not in
        ``held`` (left over or queued directly), oldest first; ``manager``'s queue; the
        shared queue. Each taken job is on ``worker``'s held list before this returns. If
        none is available, waits up to ``timeout`` seconds for one; returns ``[]`` when
        the wait runs out. It may also return ``[]`` early (a spurious wake-up): callers
        loop. ``limit=0`` only finishes; a ``limit`` above ``capabilities.max_take`` is
        cut down to it.

        :param held: exactly the ids ``worker`` has taken and not settled yet (excluding
            ``finished``); they are not handed out again. A backend may rely on their
            number alone. Ids on the held list that the worker never saw (a reply lost
            to a connection error) are handed out again by a later take.
        """

    @abc.abstractmethod
    def finish_jobs(self, *, worker: str, job_ids: Sequence[str]) -> list[bool]:
        """Finish jobs now, guarded as in :meth:`take`; say which ones ``worker`` still held."""

    @abc.abstractmethod
    def fail_job(self, *, worker: str, job: Job, failure: Failure) -> bool:
        """Move ``job`` from ``worker``'s held list to the failed-job registry, atomically.

        Guarded: does nothing and returns ``False`` if ``worker`` no longer holds it.
        """

    @abc.abstractmethod
    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        """Put ``job`` back on the queue it came from with ``attempts`` incremented.

        The job's data and meta are stored as given (``job`` may be an evolved copy).
        With ``delay`` it becomes available that many seconds later (if the backend
        declares ``capabilities.delayed``; otherwise the caller waits). Guarded as
        :meth:`fail_job`.
        """

    @abc.abstractmethod
    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        """Put held jobs that were never started back at the front of their queues.

        Used when a worker stops with prefetched jobs. Does not count as an attempt.
        Returns how many were put back.
        """

    @abc.abstractmethod
    def recover_worker(self, *, manager: str, worker: str) -> int:
        """Put back every job a dead worker held, and remove it from its manager's workers.

        Called by whoever knows the worker is dead (its manager saw the process exit).
        Atomic per job and idempotent; a backend may move a long list in batches so no
        single step blocks others. Jobs go back to the queue they came from (a job queued
        on the worker directly goes to its manager's queue). Returns how many jobs were
        put back.
        """

    # -- membership ------------------------------------------------------------------

    @abc.abstractmethod
    def register_manager(self, name: str) -> None:
        """Announce that manager ``name`` is running (idempotent)."""

    @abc.abstractmethod
    def deregister_manager(self, name: str) -> None:
        """Announce that manager ``name`` has stopped (idempotent)."""

    @abc.abstractmethod
    def register_worker(self, *, manager: str, worker: str) -> None:
        """Announce that ``worker`` of ``manager`` is running (idempotent)."""

    @abc.abstractmethod
    def deregister_worker(self, *, manager: str, worker: str) -> None:
        """Announce that ``worker`` of ``manager`` has stopped (idempotent)."""

    # -- read-only queries (what a status command or dashboard shows) ----------------

    @abc.abstractmethod
    def managers(self) -> list[str]:
        """Names of the running managers, sorted."""

    @abc.abstractmethod
    def workers(self, manager: str) -> list[str]:
        """Names of ``manager``'s running workers, sorted."""

    @abc.abstractmethod
    def queued_job_ids(self, manager: str | None = None) -> list[str]:
        """Ids waiting on ``manager``'s queue (or the shared queue), next to run first."""

    @abc.abstractmethod
    def held_job_ids(self, worker: str) -> list[str]:
        """Ids on ``worker``'s held list."""

    @abc.abstractmethod
    def get_job(self, job_id: str) -> Job | None:
        """The stored job (queued, held, delayed or failed), or ``None`` if there is none."""

    @abc.abstractmethod
    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        """The most recently failed jobs, newest first."""

    @abc.abstractmethod
    def requeue_failed(self, job_id: str) -> bool:
        """Move a failed job back onto the queue it came from, attempts reset."""

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str | None = None) -> Broker:
        """Open a broker from a URL (``None``: the backend's default, e.g. localhost).

        This is how ``qw run --backend NAME --url URL`` opens the backend.

        :raises ConfigurationError: the URL is malformed (the message hides passwords).
        :raises BrokerUnavailable: the server cannot be reached.
        """

    @abc.abstractmethod
    def factory(self) -> BrokerFactory:
        """A picklable callable that opens an equivalent broker (in any process)."""

    @abc.abstractmethod
    def check_name(self, name: str) -> str:
        """Return ``name`` if it is a valid manager or worker name.

        :raises InvalidName: with a one-line reason.
        """

    def close(self) -> None:  # noqa: B027 - optional hook for backends holding resources
        """Release connections; the broker is not used afterwards."""

    def describe(self) -> str:
        """A one-line, password-free description for logs (``redis://host:6379/0``)."""
        return type(self).__name__
