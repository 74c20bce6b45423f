"""The memory broker's state, and what its roles share: one lock over plain dicts and lists.

Each role of :class:`~qw_core.memory.MemoryBroker` is a module of this package whose class
subclasses :class:`MemoryBase`; the helpers here are the ones more than one role uses
(where a job goes back to, the failed registry's trimming, the recovery of a worker's
jobs, which both a worker's own session and the reaper run).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence

import attrs

from qw_core.broker import Broker, Reaped, check_listed
from qw_core.encoding import decode_job, encode_failure, encode_job
from qw_core.errors import JobCrashed
from qw_core.memory_rpc import CAPABILITIES, MemoryServer
from qw_core.memory_schedules import ScheduleBook
from qw_core.models import DEFAULT_QUEUE, Failure, Job
from qw_core.namerules import PORTABLE
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.results import FINISHED_CAP, JobResult, decode_value
from qw_core.unique import UniqueKeys

#: How many kept results make the next one sweep the expired ones out (results nobody
#: reads would otherwise stay in memory after their time).
RESULTS_SWEEP_AT = 1000

#: Minutes of :meth:`MemoryBroker.note_jobs_run` counts kept (the contract asks for an hour).
KEEP_MINUTES = 120

#: Where a job goes back to: a manager's name (its queue), ``queue:<name>`` for a named
#: queue (see :func:`named_origin`), or ``None`` (the shared queue).
Origin = str | None

#: How an origin names a named queue (a manager's name has no ``:``).
NAMED = "queue:"


def named_origin(queue: str | None) -> Origin:
    """The origin of named queue ``queue`` (``None`` or ``"default"``: the shared queue)."""
    return None if queue is None or queue == DEFAULT_QUEUE else NAMED + queue


#: The origin of a job queued straight onto a worker and not taken yet (whatever manager
#: the job names, as on Redis, where it has no origin entry until then): it goes back to
#: the queue of that worker's manager, known once the worker takes it (or is recovered).
#: It contains ``:``, so no valid name can be mistaken for it.
WORKERS_MANAGER = ":worker's manager"


def check_name(name: str) -> str:
    """Return ``name`` if the :data:`~qw_core.namerules.PORTABLE` rules accept it: the
    strictest of any backend's, so that a test catches a name a server would refuse.

    :raises InvalidName: with a one-line reason.
    """
    return PORTABLE.check(name)


@attrs.frozen
class FailedEntry:
    """One entry of the failed-job registry: the job as it last ran, and why it failed."""

    job: str  # the Job as JSON text
    failure: str  # the Failure as JSON text
    origin: Origin
    failed_at: float


class MemoryState:
    """Everything one memory broker holds, guarded by one condition variable."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jobs: dict[str, str] = {}  # id -> the job as JSON text, while queued, held or delayed
        self.queues: defaultdict[Origin, deque[str]] = defaultdict(deque)  # next to run first
        self.held: defaultdict[str, dict[str, Origin]] = defaultdict(dict)  # oldest first
        self.delayed: list[tuple[float, int, str, Origin]] = []  # heap of (due, seq, id, origin)
        self.failed: dict[str, FailedEntry] = {}  # oldest first
        self.managers: set[str] = set()
        self.workers: defaultdict[str, set[str]] = defaultdict(set)
        self.sequence = itertools.count()
        self.server: MemoryServer | None = None
        # Liveness: name -> (token, expiry on the monotonic clock); the managers that beat
        # (name -> token), which the reaper looks after; crash counts; the reaper lease.
        self.heartbeats: dict[str, tuple[str, float]] = {}
        self.beating: dict[str, str] = {}
        self.recoveries: dict[str, int] = {}
        self.lease: tuple[str, float] | None = None
        self.blocked_takes = 0  # takes waiting for a job right now (tests wait for one)
        self.suspects: set[str] = set()  # see Broker.recover_worker
        self.nudged: set[str] = set()  # workers whose next (or current) wait ends at once
        self.results: dict[str, tuple[str, float, str, float]] = {}  # id -> (value, at, worker, expiry)
        self.finished: dict[str, tuple[float, float]] = {}  # id -> (at, expiry), oldest first
        self.running: dict[str, tuple[dict[str, float], float]] = {}  # worker -> (job -> since, expiry)
        self.schedules = ScheduleBook()  # declared schedules and their last ticks
        self.jobs_run: dict[int, dict[str, int]] = {}  # minute -> manager -> jobs begun
        self.unique = UniqueKeys()  # unique key -> the job that holds it (see qw_core.unique)

    def alive(self, name: str, now: float) -> bool:
        beat = self.heartbeats.get(name)
        return beat is not None and beat[1] > now


class MemoryBase(Broker):
    """The state every role of the memory broker works on, and the helpers they share."""

    capabilities = CAPABILITIES

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        """:param clock: the backend's wall clock, which :meth:`now` reads and schedules
        tick by (seconds since the epoch); default :func:`time.time`. A test gives
        one to move time (across a change of daylight saving time, say) without waiting.
        """
        self._state = MemoryState()
        self._clock = clock or time.time

    def _stored(self, job_id: str) -> bool:
        return job_id in self._state.jobs

    def _started(self, job_id: str) -> bool:
        """Whether a worker took ``job_id`` (not one sent to a worker and not taken yet)."""
        return any(held.get(job_id, WORKERS_MANAGER) != WORKERS_MANAGER for held in self._state.held.values())

    def _ended(self, job_id: str) -> None:
        """``job_id`` ended (finished, failed for good): its unique key is free."""
        self._state.unique.release(job_id, now=time.monotonic())

    def _encode(self, job: Job) -> str:
        for name in (job.manager, job.worker, job.queue):
            if name is not None:
                self.check_name(name)
        return encode_job(job)

    @property
    def blocked_takes(self) -> int:
        """How many takes wait for a job right now (in any thread, or through the factory's
        server): a test that checks that a job wakes a blocked take waits for one first."""
        with self._state.cond:
            return self._state.blocked_takes

    def _promote_due(self) -> float | None:
        """Move delayed jobs that are due to their queues; seconds until the next is due."""
        state = self._state
        now = time.monotonic()
        while state.delayed and state.delayed[0][0] <= now:
            _, _, job_id, origin = heapq.heappop(state.delayed)
            state.queues[origin].append(job_id)
        return state.delayed[0][0] - now if state.delayed else None

    def _finish(self, worker: str, job_ids: Iterable[str], keep: float = 0.0) -> list[bool]:
        state = self._state
        own = state.held.get(worker, {})
        done = []
        for job_id in job_ids:
            holds = job_id in own
            if holds:
                del own[job_id]
                del state.jobs[job_id]
                state.recoveries.pop(job_id, None)
                state.suspects.discard(job_id)
                if keep > 0:
                    state.finished.pop(job_id, None)
                    state.finished[job_id] = (time.time(), time.monotonic() + keep)
                self._ended(job_id)
            done.append(holds)
        if keep > 0:
            self._trim_finished()
        return done

    def _trim_finished(self) -> None:
        """Forget finished jobs past their time (the oldest first) and beyond :data:`FINISHED_CAP`."""
        finished, now = self._state.finished, time.monotonic()
        while finished:  # oldest first: stop at the first to keep, so a finish costs O(1)
            job_id, (_, expiry) = next(iter(finished.items()))
            if expiry > now and len(finished) <= FINISHED_CAP:
                break
            del finished[job_id]

    def _result(self, job_id: str) -> JobResult | None:
        """The kept result of ``job_id``, dropping it once expired; the caller holds the lock."""
        kept = self._state.results.get(job_id)
        if kept is None:
            return None
        value, at, worker, expiry = kept
        if expiry <= time.monotonic():
            del self._state.results[job_id]
            return None
        return JobResult(job_id=job_id, value=decode_value(value), finished_at=at, worker=worker)

    def _add_failed(
        self, job_id: str, text: str, failure: Failure, origin: Origin, limits: FailedLimits
    ) -> None:
        """Record a failed job, stamped with this broker's clock, and trim the registry;
        the caller holds the lock."""
        now = time.time()
        failure_text = encode_failure(attrs.evolve(failure, failed_at=now))
        self._state.failed.pop(job_id, None)  # a newer failure of the same id goes last
        self._state.failed[job_id] = FailedEntry(text, failure_text, origin, now)
        self._trim_failed(limits, now=now)

    def _trim_failed(self, limits: FailedLimits, *, now: float) -> None:
        """Delete the oldest failed jobs beyond ``limits``; the caller holds the lock."""
        state = self._state
        doomed: list[str] = []
        if limits.max_age is not None:
            cutoff = now - limits.max_age
            doomed += [job_id for job_id, entry in state.failed.items() if entry.failed_at < cutoff]
        if limits.max_count is not None:
            excess = len(state.failed) - len(doomed) - limits.max_count
            if excess > 0:
                aged = set(doomed)
                kept = (job_id for job_id in state.failed if job_id not in aged)
                doomed += list(itertools.islice(kept, excess))
        for job_id in doomed:
            del state.failed[job_id]

    def _holds(self, worker: str, job_id: str) -> bool:
        return job_id in self._state.held.get(worker, {})

    def _unhold(self, worker: str, job_id: str) -> Origin:
        """Take a held ``job_id`` off ``worker``'s held list; the queue it goes back to."""
        origin = self._state.held[worker].pop(job_id)
        return self._manager_of(worker) if origin == WORKERS_MANAGER else origin

    def _manager_of(self, worker: str) -> str | None:
        """Where a job ``worker`` never took goes back (a rare case): the queue of the
        manager it registered under (the first by name, if several); for a worker
        registered under none, that of the manager its name says (``<manager>.<pid>``),
        and for a name of another form, the shared queue (``None``)."""
        for manager, workers in sorted(self._state.workers.items()):
            if worker in workers:
                return manager
        head, dot, _ = worker.rpartition(".")  # the <manager>.<pid> convention
        return head if dot and head else None

    def _recover(
        self,
        manager: str,
        worker: str,
        max_recoveries: int | None,
        *,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> Reaped:
        """Recover ``worker``'s held jobs; the caller holds the lock."""
        state = self._state
        own = state.held.pop(worker, {})
        state.heartbeats.pop(worker, None)
        state.workers[manager].discard(worker)
        requeued, poison = 0, []
        untaken: list[str] = []
        # Taken jobs go back to the front, in the order they were taken; jobs sent to the
        # worker and never taken, to the back of its manager's queue, oldest first.
        for job_id, origin in reversed(own.items()):
            back_to = manager if origin == WORKERS_MANAGER else origin
            if max_recoveries is not None and crashed_job in (None, job_id):
                state.recoveries[job_id] = count = state.recoveries.get(job_id, 0) + 1
                if count > max_recoveries:
                    poison.append((job_id, back_to))
                    continue
            if origin == WORKERS_MANAGER:
                untaken.insert(0, job_id)
            else:
                state.queues[back_to].appendleft(job_id)
            if job_id in suspects:
                state.suspects.add(job_id)
            requeued += 1
        state.queues[manager].extend(untaken)
        for job_id, back_to in poison:
            error = JobCrashed(
                f"worker {worker} died while holding job {job_id}, which had been put back "
                f"{max_recoveries} times already after its worker died"
            )
            failure = Failure.from_exception(error, worker=worker, kind="crashed")
            state.recoveries.pop(job_id, None)
            state.suspects.discard(job_id)
            crashed = decode_job(state.jobs.pop(job_id))
            self._ended(job_id)
            text = encode_job(attrs.evolve(crashed, attempts=crashed.attempts + 1))
            self._add_failed(job_id, text, failure, back_to, limits)
        state.cond.notify_all()
        return Reaped(manager=manager, worker=worker, requeued=requeued, failed=len(poison))

    def _running(self, name: str, now: float) -> bool:
        return name in self._state.managers or self._worker_running(name, now)

    def _worker_running(self, name: str, now: float) -> bool:
        """Registered as a worker, or beating and not a manager."""
        state = self._state
        if any(name in workers for workers in state.workers.values()):
            return True
        return name not in state.managers and state.alive(name, now)

    def _listed(self, manager: str | None, queue: str | None) -> Origin:
        manager, queue = check_listed(manager, queue)
        for name in (manager, queue):
            if name is not None:
                self.check_name(name)
        return manager if manager is not None else named_origin(queue)


def paged(ids: Iterable[str], offset: int, limit: int | None) -> list[str]:
    """The ``limit`` ids (``None``: all the rest) of ``ids`` from position ``offset`` on."""
    return list(itertools.islice(ids, offset, None if limit is None else offset + limit))
