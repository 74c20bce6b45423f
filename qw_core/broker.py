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

Liveness: a manager keeps a heartbeat with a TTL for itself and each running worker
(:meth:`beat`); every manager runs a reaper (:meth:`reap`) that recovers the workers whose
heartbeat has lapsed, so the jobs of a worker whose manager died too are not lost either.

Differences between backends are declared in :class:`Capabilities`, never discovered
with ``isinstance``.
"""

from __future__ import annotations

import abc
import datetime
import math
import time
from collections.abc import Callable, Mapping, Sequence

import attrs

from qw_core.errors import ConfigurationError, InvalidJob, QwError, UniqueJobsUnsupported
from qw_core.models import (
    DEFAULT_QUEUE,
    FailedJob,
    Failure,
    Job,
    JobsRun,
    JobState,
    RunningJob,
    ScheduleInfo,
    State,
    TickResult,
    TickState,
)
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.results import JobResult
from qw_core.unique import Queued, UniqueSetting, unique_of, with_unique


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a backend can do, for the core and the contract tests to consult.

    :param multi_host: managers on different hosts may share the broker.
    :param max_take: the largest batch :meth:`Broker.take` will hand back in one call.
    :param delayed: the broker keeps delayed jobs itself: :meth:`Broker.queue_jobs` and
        :meth:`Broker.retry_job` honour a delay (without it, ``queue_jobs`` refuses one).
    :param shared_by_url: another process opening :meth:`Broker.from_url` sees the same
        jobs (false for the in-memory backend, whose jobs live in one process), so a
        command such as ``qw enqueue`` can refuse instead of queuing into nowhere.
    :param schedules: the broker keeps periodic jobs' ticks (:meth:`Broker.enqueue_tick`
        and the methods beside it): managers may run schedules on it.
    :param throughput: the broker keeps the counts of :meth:`Broker.note_jobs_run`, and
        :meth:`Broker.jobs_run` reads them back (without it, the first does nothing and the
        second returns ``[]``: a dashboard says the backend keeps none).
    :param migrations: the backend keeps a schema of its own on its server, which
        :meth:`Broker.apply_migrations` creates and upgrades (``qw migrate``) and
        :meth:`Broker.migration_script` prints; without it, there is nothing to migrate.
    :param unique: the broker keeps unique jobs (:meth:`Broker.queue_jobs_unique`), and
        :meth:`Broker.queue_jobs` honours a job's ``meta["unique"]``.
    """

    multi_host: bool
    max_take: int = 100
    delayed: bool = True
    shared_by_url: bool = True
    schedules: bool = False
    throughput: bool = False
    migrations: bool = False
    unique: bool = False


#: Jobs per batch of the default :meth:`Broker.requeue_all_failed` (one progress report each).
_DEFAULT_BATCH = 100

#: Opens a broker; must be picklable so worker processes started with ``spawn`` can call it.
BrokerFactory = Callable[[], "Broker"]


@attrs.frozen(kw_only=True)
class Reaped:
    """A dead worker whose held jobs a reaper recovered (see :meth:`Broker.reap`).

    :param manager: the worker's manager.
    :param worker: the worker's name.
    :param requeued: jobs put back on their queues.
    :param failed: jobs recovered too often, moved to the failed registry (kind ``"crashed"``).
    """

    manager: str
    worker: str
    requeued: int = 0
    failed: int = 0


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
        blocked :meth:`take` notices a job that comes due while it waits. While delayed, a
        job is listed by :meth:`delayed_job_ids` and readable with :meth:`get_job`.

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
        another job holds it (:meth:`requeue_failed`).

        This default raises: a backend declares ``capabilities.unique`` and overrides it.

        :raises UniqueJobsUnsupported: the backend cannot keep jobs unique (nothing queued).
        """
        raise UniqueJobsUnsupported(f"{self.describe()} cannot keep jobs unique; queue them without a key")

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
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        keep_finished: float = 0.0,
    ) -> list[Job]:
        """Finish ``finished``, then take up to ``limit`` jobs for ``worker``.

        Finishing is guarded: a job id is removed (with its data) only if it is still on
        ``worker``'s held list; a job that was recovered and handed to someone else
        meanwhile is left alone. With ``keep_finished`` > 0, each job finished is
        remembered for that many seconds, so that :meth:`job_status` says it succeeded
        (at most :data:`~qw_core.results.FINISHED_CAP` of them, the newest; 0: nothing is
        kept). Remembering costs at most a write per call, and never fails the finish.

        Jobs are taken, in this order, from: ids on ``worker``'s held list that are not in
        ``held`` (left over or queued directly), oldest first; ``manager``'s queue; then
        ``queues``, in strict priority order (a job on an earlier queue is always taken
        before one on a later one; ``"default"`` is the shared queue). Each taken job is on
        ``worker``'s held list before this returns. If none is available, waits up to
        ``timeout`` seconds for one (on any of them); returns ``[]`` when the wait runs
        out. It may also return ``[]`` early (a spurious wake-up): callers loop. ``limit=0``
        only finishes; a ``limit`` above ``capabilities.max_take`` is cut down to it.

        :param queues: the named queues served, by priority; the names are checked as
            :meth:`check_name` checks a manager's.
        :param held: exactly the ids ``worker`` has taken and not settled yet (excluding
            ``finished``): running, or waiting their turn; they are not handed out again.
            Ids on the held list that the worker never saw (a reply lost to a connection
            error) are handed out again by a later take, before anything else: never one
            of ``held``, wherever on the list it is (a worker running jobs at once takes
            while some of them run).
        """

    @abc.abstractmethod
    def nudge(self, worker: str) -> None:
        """Make a :meth:`take` by ``worker`` that waits for a job now, or the next one that
        would wait, return at once (with whatever it takes, possibly nothing).

        A worker running jobs concurrently waits in a take while some of its jobs run;
        when one completes, it nudges itself (from another broker object, in the thread
        that ran the job), so that it settles the job and fills the free slot at once
        instead of at the end of the wait. A nudge nobody waited for ends one later wait
        early, at most; it never takes or loses a job.
        """

    def still_held(self, *, worker: str, job_ids: Sequence[str]) -> list[bool]:
        """Which of ``job_ids`` are on ``worker``'s held list now.

        A worker asks before running jobs that waited in its batch (it may have been
        paused past its heartbeat TTL and reaped meanwhile). Reads :meth:`held_job_ids`;
        a backend that can answer more cheaply overrides it.
        """
        held = set(self.held_job_ids(worker))
        return [job_id in held for job_id in job_ids]

    @abc.abstractmethod
    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        """Finish jobs now, guarded (and remembered for ``keep_finished`` seconds) as in
        :meth:`take`; say which ones ``worker`` still held."""

    @abc.abstractmethod
    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        """Finish one job and keep what it returned, in one atomic step, guarded as
        :meth:`finish_jobs` is: only if ``worker`` still holds it (else nothing is written
        and this returns ``False``), so a job's result is never kept without its finish,
        nor its finish without its result. Wakes every :meth:`wait_result` on it.

        :param result: the value as JSON text (:func:`qw_core.results.encode_value`).
        :param ttl: seconds to keep it (more than 0); a new result of the same id replaces it.
        """

    @abc.abstractmethod
    def job_status(self, job_id: str) -> JobState:
        """Where job ``job_id`` is now: queued (on which queue), delayed (until when), held
        by a worker (which one, if it is registered), failed (why), succeeded (when, and
        its result if any, while they are kept: see ``keep_finished`` in :meth:`take` and
        :meth:`finish_with_result`), or unknown. Reads only, with a few commands; for people and
        tools (``qw job ID``), not for a program to synchronise on (a job moves on while
        its answer travels: wait for a result with :meth:`wait_result`)."""

    @abc.abstractmethod
    def get_result(self, job_id: str) -> JobResult | None:
        """What finished job ``job_id`` returned, while it is kept; ``None`` if nothing is
        (not finished yet, returned ``None``, failed, expired, or no such job)."""

    @abc.abstractmethod
    def wait_result(self, job_id: str, timeout: float) -> JobResult | None:
        """:meth:`get_result`, waiting up to ``timeout`` seconds for the result to be
        kept. Blocks in the backend (no polling loop in the caller); ``None`` when the wait
        runs out. A result kept before the call is returned at once."""

    @abc.abstractmethod
    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        """Move ``job`` from ``worker``'s held list to the failed-job registry, atomically.

        The registry keeps the job with the failed run counted: ``attempts`` is one more
        than ``job.attempts`` (the runs that failed before this one).

        Guarded: does nothing and returns ``False`` if ``worker`` no longer holds it.

        The failure is recorded at the backend's own time (``failure.failed_at``, the
        failing host's clock, is not trusted: hosts disagree), which is the ``failed_at``
        the registry reports. In the same atomic step the registry is trimmed to
        ``limits``: entries that failed more than ``limits.max_age`` seconds ago, then the
        oldest beyond ``limits.max_count``, are deleted (the new entry counts). A backend
        may delete a bounded number per call, so a bound that was just lowered is reached
        over the next few failures.
        """

    def fail_jobs(
        self,
        *,
        worker: str,
        failures: Sequence[tuple[Job, Failure]],
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[bool]:
        """:meth:`fail_job` for each ``(job, failure)``; which ones ``worker`` still held.

        A worker writes the failures of a batch of jobs together, as it finishes the jobs
        that succeeded. This default makes one call per job; a backend that can do them in
        one round trip (Redis: one script call) overrides it. Each job is guarded on its
        own, as in :meth:`fail_job`.
        """
        return [
            self.fail_job(worker=worker, job=job, failure=failure, limits=limits) for job, failure in failures
        ]

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
    def recover_worker(
        self,
        *,
        manager: str,
        worker: str,
        max_recoveries: int | None = None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
    ) -> int:
        """Put back every job a dead worker held, and remove it from its manager's workers.

        Called by whoever knows the worker is dead (its manager saw the process exit).
        Atomic per job and idempotent; a backend may move a long list in batches so no
        single step blocks others. Jobs the worker took go back to the front of the queue
        they came from, in the order it took them (the first taken runs next); jobs queued
        on the worker directly that it never took go to the back of its manager's queue,
        oldest first. The worker's heartbeat, if any, is deleted. Returns how many jobs
        were put back.

        :param max_recoveries: count, per job, how often it was recovered (the count is
            cleared when the job is finished or failed); a job recovered more often than
            this is a poison job and goes to the failed registry instead, with a
            :class:`~qw_core.models.Failure` of kind ``"crashed"``. ``None`` counts
            nothing (a worker stopped on purpose, not crashed).
        :param crashed_job: the job the worker had in hand when it died, if its manager
            knows it: only that job's recoveries are counted, since the others it held
            (taken in the same batch, or run and not yet finished) did not kill it.
            ``None`` counts every held job (nobody knows which one ran).
        :param suspects: the jobs the worker had in hand when it died, when it had several
            (it ran jobs concurrently): nobody knows which one killed it, so none is
            counted (pass ``max_recoveries=None``); each is put back marked instead, and
            a take that hands it out sets :attr:`Job.suspect`, so that its worker runs it
            alone and a crash then blames it alone. The mark lasts until the job ends
            (finished, failed or retried): one put back unrun is still a suspect.
        """

    # -- liveness --------------------------------------------------------------------

    @abc.abstractmethod
    def beat(
        self,
        *,
        manager: str,
        token: str,
        workers: Mapping[str, str],
        ttl: float,
        running: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, str | None]:
        """Say that ``manager`` and ``workers`` are alive for ``ttl`` more seconds.

        One atomic step: each name's heartbeat is set to its token (unique to one start
        of that process) and expires ``ttl`` seconds later unless refreshed; the manager
        is registered (and becomes one the reapers look after) and so is each worker
        (again, if a reaper removed it while it was paused).

        :param workers: worker name → token.
        :param running: for each worker, the jobs it has in hand and since when (job id →
            seconds since the epoch), kept as long as its heartbeat (replacing what the
            last beat said) for :meth:`job_status`; ``None`` changes nothing of it.
        :return: the names whose heartbeat was not this token, each with the token it had
            (``None``: it had lapsed or never existed): a process paused past its TTL,
            whose jobs a reaper may have handed to others, or another process using the
            same name.
        """

    @abc.abstractmethod
    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        """The token of ``name``'s heartbeat and the seconds it has left, or ``None`` if it
        has none (never beat, lapsed, or deregistered). A manager about to start under a
        name asks, to tell whether another one is using it."""

    @abc.abstractmethod
    def reap(
        self, *, owner: str, lease: float, ttl: float, max_recoveries: int | None = 3
    ) -> list[Reaped] | None:
        """Recover every worker whose heartbeat has lapsed, as :meth:`recover_worker` does.

        Looks only at managers that have called :meth:`beat` (a process speaking the
        original protocol without heartbeats is never reaped). Checking that a worker's
        heartbeat is gone and moving its jobs is one atomic step (per batch, for a long
        list, each batch checking again), so a worker that beats again is left alone and
        concurrent reapers move each job once. A manager whose heartbeat is gone and that
        has no worker left is deregistered.

        :param owner: this reaper's token.
        :param lease: throttle: if another owner ran a reap less than ``lease`` seconds
            ago, do nothing and return ``None``; ``0`` always runs.
        :param ttl: the heartbeat TTL: a backend that can tell that its server restarted
            less than ``ttl`` seconds ago (so heartbeats may have lapsed while nobody
            could write them) judges nobody dead and returns ``None``.
        :param max_recoveries: as for :meth:`recover_worker`.
        :return: the workers recovered, or ``None`` if this reaper did not run.
        """

    # -- membership ------------------------------------------------------------------

    @abc.abstractmethod
    def register_manager(self, name: str) -> None:
        """Announce that manager ``name`` is running (idempotent)."""

    @abc.abstractmethod
    def deregister_manager(self, name: str) -> None:
        """Announce that manager ``name`` has stopped (idempotent); deletes its heartbeat."""

    @abc.abstractmethod
    def register_worker(self, *, manager: str, worker: str) -> None:
        """Announce that ``worker`` of ``manager`` is running (idempotent)."""

    @abc.abstractmethod
    def deregister_worker(self, *, manager: str, worker: str) -> None:
        """Announce that ``worker`` of ``manager`` has stopped (idempotent); deletes its heartbeat."""

    # -- read-only queries (what a status command or dashboard shows) ----------------

    @abc.abstractmethod
    def managers(self) -> list[str]:
        """Names of the running managers, sorted."""

    @abc.abstractmethod
    def workers(self, manager: str) -> list[str]:
        """Names of ``manager``'s running workers, sorted."""

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

    @abc.abstractmethod
    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        """Ids on ``worker``'s held list, paged as :meth:`queued_job_ids` (in the backend's order)."""

    def queued_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        """How many ids wait on a queue, chosen as for :meth:`queued_job_ids`.

        Counts :meth:`queued_job_ids`; a backend that can count without listing (Redis:
        ``LLEN``) overrides this, so a status command or a metrics scrape stays cheap
        however deep the queue.
        """
        return len(self.queued_job_ids(manager, queue=queue))

    @abc.abstractmethod
    def named_queues(self) -> list[str]:
        """The named queues jobs were queued on (delayed ones included), sorted; not the
        shared queue. A queue stays listed once used, empty or not."""

    def held_count(self, worker: str) -> int:
        """How many ids ``worker`` holds; see :meth:`queued_count`."""
        return len(self.held_job_ids(worker))

    def delayed_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        """How many ids wait for their due time to go to a queue, chosen as for
        :meth:`queued_job_ids`."""
        return len(self.delayed_job_ids(manager, queue=queue))

    @abc.abstractmethod
    def get_job(self, job_id: str) -> Job | None:
        """The stored job (queued, held, delayed or failed), or ``None`` if there is none."""

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

    @abc.abstractmethod
    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        """The most recently failed jobs, newest first."""

    @abc.abstractmethod
    def failed_count(self) -> int:
        """How many jobs the failed-job registry holds."""

    @abc.abstractmethod
    def get_failed(self, job_id: str) -> FailedJob | None:
        """The failed job ``job_id`` as the registry keeps it, or ``None`` if it has none."""

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

    def running_jobs(self, manager: str) -> list[RunningJob]:
        """The jobs ``manager``'s workers have in hand now, each with since when and the
        queue it came from, as its last heartbeat said (:meth:`beat` with ``running``),
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

    def note_jobs_run(self, *, manager: str, count: int) -> None:
        """Add ``count`` to the jobs ``manager``'s workers began in the current minute, by
        the backend's clock (so hosts whose clocks disagree count in the same minutes).

        A manager calls this with each heartbeat, with how many jobs its workers began
        since the last call (it reads the counters its workers keep in shared memory): one
        write per heartbeat, never one per job. A backend keeps the counts for an hour at
        least, and forgets them after a day at most. Not atomic with anything; a call
        retried after a timeout may count twice (these are statistics).

        This default keeps nothing: a backend that keeps counts declares
        ``capabilities.throughput`` and overrides this and :meth:`jobs_run`.

        :raises ValueError: ``count`` is negative.
        """
        if count < 0:
            raise ValueError(f"a count of jobs run must not be negative, not {count}")

    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        """How many jobs each manager's workers began per minute (:meth:`note_jobs_run`),
        for the last ``minutes`` minutes up to and including the current one, by the
        backend's clock, oldest first: one entry per minute, with no counts for a minute
        nobody noted any. ``[]`` when the backend keeps none (this default).

        :raises ValueError: ``minutes`` is not between 1 and 60.
        """
        check_minutes(minutes)
        return []

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

    # -- periodic jobs (capabilities.schedules) --------------------------------------
    #
    # Not abstract: a backend without ``capabilities.schedules`` keeps these defaults, which
    # refuse (``schedules`` lists nothing), and a manager with schedules refuses to start on it.

    def _no_schedules(self, what: str) -> QwError:
        return QwError(
            f"{what}: the {type(self).__name__} backend does not keep periodic jobs "
            "(capabilities.schedules is false); run schedules on a backend that does, such as redis"
        )

    def now(self) -> float:
        """The backend's clock: seconds since the epoch (Redis: ``TIME``).

        Schedules tick by this clock, never by a host's: managers on hosts whose clocks
        disagree agree on it, so each tick is due at one moment for all of them.
        """
        raise self._no_schedules("now")

    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        """Enqueue ``job`` for tick ``tick`` of schedule ``schedule_id``, once across every
        caller: one atomic step that checks that ``tick`` is newer than the schedule's last
        enqueued tick, records it (with ``manager`` and the backend's time) and queues
        ``job`` (on the queue it names), all or nothing.

        A tick not newer than the last (the same tick again: a call retried after a
        timeout, or another manager's; or an older one) writes nothing and reports
        ``enqueued=False`` with the last tick, so concurrent managers and retries enqueue
        each tick once, and ticks are enqueued in order (monotonic). No lock or lease is
        held between calls: a caller that dies at any point leaves either nothing or the
        whole step done.

        :param schedule_id: the schedule's id (:func:`qw_core.schedules.check_schedule_id`).
        :param tick: the tick, seconds since the epoch.
        :param job: the tick's job, with an id derived from the schedule and the tick
            (:func:`qw_core.schedules.tick_job_id`); a job with that id stored already is
            left as it is (as :meth:`queue_jobs` does).
        :param manager: who enqueues it (``qw schedules`` shows it).
        :raises InvalidJob: the job cannot be stored (nothing is written).
        """
        raise self._no_schedules("enqueue_tick")

    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        """Say that ``manager`` runs these schedules, for ``ttl`` seconds unless declared
        again; return each one's last enqueued tick (``None``: none yet).

        Replaces what ``manager`` declared before (an empty mapping withdraws everything).
        Only schedules that a manager declares now are listed (:meth:`schedules`): a
        schedule removed from the code disappears once no running manager declares it,
        and its last tick is forgotten a while later (Redis: a week after the last
        declaration), so nothing is left behind.

        :param declarations: schedule id → its declaration (JSON text made by
            :meth:`qw_core.schedules.Schedule.declaration`), stored as given.
        """
        raise self._no_schedules("declare_schedules")

    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        """What each manager declares now (manager → schedule id → declaration), for those
        whose declarations have not lapsed."""
        raise self._no_schedules("schedule_declarations")

    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        """The last enqueued tick of each of ``schedule_ids`` that has one."""
        raise self._no_schedules("tick_states")

    def schedules(self) -> list[ScheduleInfo]:
        """The schedules running managers declare, sorted by id: each with its next and
        last run and the manager that enqueued its last tick. ``[]`` on a backend that
        does not keep schedules.

        A schedule that managers declare in different ways (another cron expression, zone,
        queue or data under one id) is listed once per way, each with ``conflict`` set.
        Built from :meth:`schedule_declarations`, :meth:`tick_states` and :meth:`now`.
        """
        if not self.capabilities.schedules:
            return []
        from qw_core.schedules import listed_schedules  # noqa: PLC0415 - it imports this module

        declared = self.schedule_declarations()
        ids = sorted({schedule_id for found in declared.values() for schedule_id in found})
        return listed_schedules(declared, self.tick_states(ids), self.now())

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str | None = None) -> Broker:
        """Open a broker from a URL (``None``: the backend's default, e.g. localhost).

        This is how ``qw run --backend NAME --url URL`` opens the backend.

        :raises ConfigurationError: the URL is malformed (the message hides passwords).
        :raises BrokerUnavailable: the server cannot be reached.
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

    def setup_warnings(self) -> list[str]:
        """Ways the server is set up that can lose jobs (a manager logs each at start).

        For example a Redis whose ``maxmemory-policy`` may evict keys. Empty by default.
        """
        return []

    @abc.abstractmethod
    def stray_queues(self) -> dict[str, int]:
        """Queues holding jobs under a name no running manager or worker has, with how many
        each holds: jobs queued for a manager that never ran (a misspelt name, queued with
        ``--force``) or sent to a worker that is gone. Nothing takes them until a process
        of that name runs, or :meth:`move_queued` moves them.

        A backend may find only the names jobs were queued to through qw (Redis: the ones
        in ``qw:queues``).
        """

    @abc.abstractmethod
    def move_queued(self, name: str, *, to: str | None = None) -> int:
        """Move every job waiting under ``name`` (a manager's queue, or the list of a
        worker that is not running) to the back of manager ``to``'s queue (``None``: the
        shared queue), keeping their order; return how many moved.

        :raises WorkerRunning: ``name`` is a running worker's (registered, or beating):
            its list holds jobs it took; nothing is moved.
        """

    def problems(self) -> list[str]:
        """Stored state that keeps jobs from moving, one line each (``qw status`` shows them).

        For example a Redis queue key that some other program made a string: workers skip
        it and serve the other queues, and this says so. Empty by default.
        """
        return []


def check_listed(manager: str | None, queue: str | None) -> tuple[str | None, str | None]:
    """The ``manager`` and ``queue`` of a listing (:meth:`Broker.queued_job_ids` and the
    like), with the shared queue's name (:data:`~qw_core.models.DEFAULT_QUEUE`) as no queue.

    :raises ValueError: both are given (a queue belongs to a manager or is named, not both).
    """
    if queue == DEFAULT_QUEUE:
        queue = None
    if manager is not None and queue is not None:
        raise ValueError(f"list manager {manager!r}'s queue or queue {queue!r}, not both")
    return manager, queue


def check_page(offset: int, limit: int | None) -> None:
    """Check the ``offset`` and ``limit`` of a paged listing (:meth:`Broker.queued_job_ids`
    and the like); for backends, before anything is read.

    :raises ValueError: either is negative.
    """
    if offset < 0:
        raise ValueError(f"a listing's offset must not be negative, not {offset}")
    if limit is not None and limit < 0:
        raise ValueError(f"a listing's limit must not be negative, not {limit}")


#: The most minutes :meth:`Broker.jobs_run` reads back (backends keep an hour at least).
MAX_MINUTES = 60


def check_minutes(minutes: int) -> None:
    """Check the ``minutes`` of :meth:`Broker.jobs_run`; for backends, before anything is read.

    :raises ValueError: not between 1 and :data:`MAX_MINUTES`.
    """
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be between 1 and {MAX_MINUTES}, not {minutes}")


#: The longest a job may be delayed, in seconds (100 years): anything longer is a mistake
#: (a unit or a number of digits), and a job that waits for ever is a lost one.
MAX_DELAY = 100 * 365 * 86400.0


def check_delay(jobs: Sequence[Job], delay: float, at: float | None) -> bool:
    """Check the ``delay``/``at`` of a :meth:`Broker.queue_jobs` call; whether the jobs wait
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
