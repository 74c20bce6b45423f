"""The in-memory backend: the whole broker model in one process, for tests and trials.

It serves one manager on one host, whose workers may be threads or processes (with the
broker living in the manager process): worker processes reach it through
:meth:`MemoryBroker.factory`, which starts a small JSON-over-socket server beside it
(:mod:`qw_core.memory_rpc`).

What qw does differently from the in-memory brokers of its peers (dramatiq's stub broker,
saq's in-memory queue), and why:

* **Jobs are stored as JSON text**, never as the caller's objects. A target that mutates
  its data cannot change the stored job, and data a networked backend could not carry
  (a set, NaN, integer keys) is refused here too, so tests against this backend do not
  pass by accident.
* **It keeps the held lists**, with the same guarded finish, recovery and take order as
  a real backend, so the worker and manager code is tested against the same contract the
  Redis backend satisfies (:class:`qw_core.testing.BrokerContract` runs on both).
* **Nothing polls.** A blocked :meth:`~MemoryBroker.take` waits on a condition variable
  that every write notifies, with its wait cut short at the next delayed job's due time;
  delayed jobs sit in a heap and move to their queue when due.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from qw_core.broker import Broker, Reaped, check_delay, check_listed, check_minutes, check_page
from qw_core.encoding import decode_failure, decode_job, encode_failure, encode_job
from qw_core.errors import ConfigurationError, InvalidJob, JobCrashed, WorkerRunning
from qw_core.memory_rpc import CAPABILITIES, MemoryFactory, MemoryServer
from qw_core.memory_schedules import ScheduleBook
from qw_core.models import (
    DEFAULT_QUEUE,
    FailedJob,
    Failure,
    Job,
    JobsRun,
    JobState,
    RunningJob,
    State,
    TickResult,
    TickState,
    queue_label,
)
from qw_core.namerules import PORTABLE
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.results import FINISHED_CAP, JobResult, check_ttl, decode_value
from qw_core.unique import Queued, UniqueKeys, unique_of

#: How many kept results make the next one sweep the expired ones out (results nobody
#: reads would otherwise stay in memory after their time).
RESULTS_SWEEP_AT = 1000

#: Minutes of :meth:`MemoryBroker.note_jobs_run` counts kept (the contract asks for an hour).
KEEP_MINUTES = 120

#: Where a job goes back to: a manager's name (its queue), ``queue:<name>`` for a named
#: queue (see :func:`_named`), or ``None`` (the shared queue).
Origin = str | None

#: How an origin names a named queue (a manager's name has no ``:``).
_NAMED = "queue:"


def _named(queue: str | None) -> Origin:
    """The origin of named queue ``queue`` (``None`` or ``"default"``: the shared queue)."""
    return None if queue is None or queue == DEFAULT_QUEUE else _NAMED + queue


#: The origin of a job queued straight onto a worker and not taken yet (whatever manager
#: the job names, as on Redis, where it has no origin entry until then): it goes back to
#: the queue of that worker's manager, known once the worker takes it (or is recovered).
#: It contains ``:``, so no valid name can be mistaken for it.
_WORKERS_MANAGER = ":worker's manager"


def check_name(name: str) -> str:
    """Return ``name`` if the :data:`~qw_core.namerules.PORTABLE` rules accept it: the
    strictest of any backend's, so that a test catches a name a server would refuse.

    :raises InvalidName: with a one-line reason.
    """
    return PORTABLE.check(name)


@attrs.frozen
class _Failed:
    """One entry of the failed-job registry: the job as it last ran, and why it failed."""

    job: str  # the Job as JSON text
    failure: str  # the Failure as JSON text
    origin: Origin
    failed_at: float


class _State:
    """Everything one memory broker holds, guarded by one condition variable."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jobs: dict[str, str] = {}  # id -> the job as JSON text, while queued, held or delayed
        self.queues: defaultdict[Origin, deque[str]] = defaultdict(deque)  # next to run first
        self.held: defaultdict[str, dict[str, Origin]] = defaultdict(dict)  # oldest first
        self.delayed: list[tuple[float, int, str, Origin]] = []  # heap of (due, seq, id, origin)
        self.failed: dict[str, _Failed] = {}  # oldest first
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


class MemoryBroker(Broker):
    """A complete broker in this process's memory (``qw run --backend memory``).

    Unlike the contract's minimum, one object may be shared by any number of threads:
    every method holds the state's lock, which is also what lets the server of
    :meth:`factory` call it from a thread per client. A forked child must not use the
    copy it inherited (it would diverge): it opens a client with the factory.
    """

    capabilities = CAPABILITIES

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        """:param clock: the backend's wall clock, which :meth:`now` reads and schedules
        tick by (seconds since the epoch); default :func:`time.time`. A test gives
        one to move time (across a change of daylight saving time, say) without waiting.
        """
        self._state = _State()
        self._clock = clock or time.time

    # -- producing -------------------------------------------------------------------

    def queue_jobs(self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None) -> list[str]:
        """See :meth:`Broker.queue_jobs`; the whole batch is checked before any job is stored.

        A job whose id is queued, held or delayed already is left alone (so is the second
        of two jobs with one id in a batch), as the contract asks.
        """
        return [queued.id for queued in self.queue_jobs_unique(jobs, delay=delay, at=at)]

    def queue_jobs_unique(
        self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None
    ) -> list[Queued]:
        """See :meth:`Broker.queue_jobs_unique`; one lock covers the check and the store."""
        waits = check_delay(jobs, delay, at)
        staged = [(job, self._encode(job), unique_of(job)) for job in jobs]
        state = self._state
        done: list[Queued] = []
        with state.cond:
            now = time.monotonic()
            due = now + (delay if at is None else at - time.time())
            for job, text, unique in staged:
                if job.id in state.jobs:
                    done.append(Queued(job.id, True))
                    continue
                if unique is not None and unique.key is not None:
                    holder = state.unique.holder(
                        unique.key, stored=self._stored, started=self._started, now=now
                    )
                    if holder is not None:
                        done.append(Queued(holder, False))
                        continue
                    state.unique.claim(unique, job.id, now=now)
                done.append(Queued(job.id, True))
                state.jobs[job.id] = text
                origin = job.manager if job.manager is not None else _named(job.queue)
                if waits:
                    heapq.heappush(state.delayed, (due, next(state.sequence), job.id, origin))
                elif job.worker is not None:  # not taken yet (whatever manager it names), as on Redis
                    state.held[job.worker][job.id] = _WORKERS_MANAGER
                else:
                    state.queues[origin].append(job.id)
            state.cond.notify_all()
        return done

    def _stored(self, job_id: str) -> bool:
        return job_id in self._state.jobs

    def _started(self, job_id: str) -> bool:
        """Whether a worker took ``job_id`` (not one sent to a worker and not taken yet)."""
        return any(
            held.get(job_id, _WORKERS_MANAGER) != _WORKERS_MANAGER for held in self._state.held.values()
        )

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

    # -- consuming -------------------------------------------------------------------

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
        """See :meth:`Broker.take`. ``limit`` is clamped to ``0 .. capabilities.max_take``.

        Never returns ``[]`` early: the wait is cut only by a new job or the next due time.
        """
        self.check_name(manager)
        self.check_name(worker)
        origins: list[Origin] = [manager]
        for queue in queues:
            if queue != DEFAULT_QUEUE:
                self.check_name(queue)
            origins.append(_named(queue))
        limit = max(0, min(limit, self.capabilities.max_take))
        deadline = time.monotonic() + max(0.0, timeout)
        state = self._state
        with state.cond:
            self._finish(worker, finished, check_ttl(keep_finished))
            if limit == 0:
                return []
            skip = set(held)
            while True:
                next_due = self._promote_due()
                taken = self._take_ids(manager, worker, skip, limit, origins)
                if taken:
                    return [self._handed_out(job_id) for job_id in taken]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or worker in state.nudged:
                    state.nudged.discard(worker)
                    return []
                state.blocked_takes += 1
                try:
                    state.cond.wait(remaining if next_due is None else min(remaining, next_due))
                finally:
                    state.blocked_takes -= 1

    def _handed_out(self, job_id: str) -> Job:
        """The taken job, marked if it is a suspect (until it ends: see recover_worker)."""
        job = decode_job(self._state.jobs[job_id])
        return attrs.evolve(job, suspect=True) if job_id in self._state.suspects else job

    def nudge(self, worker: str) -> None:
        """See :meth:`Broker.nudge`."""
        self.check_name(worker)
        with self._state.cond:
            self._state.nudged.add(worker)
            self._state.cond.notify_all()

    def _take_ids(
        self, manager: str, worker: str, skip: set[str], limit: int, origins: Sequence[Origin]
    ) -> list[str]:
        """Take up to ``limit`` ids in the contract's order (after the worker's own, the
        queues of ``origins``, in order); the caller holds the lock."""
        state = self._state
        own = state.held[worker]
        taken = [job_id for job_id in own if job_id not in skip][:limit]
        for job_id in taken:
            if own[job_id] == _WORKERS_MANAGER:
                own[job_id] = manager
        for origin in origins:
            queue = state.queues.get(origin)
            while queue and len(taken) < limit:
                job_id = queue.popleft()
                own[job_id] = origin
                taken.append(job_id)
        return taken

    def _promote_due(self) -> float | None:
        """Move delayed jobs that are due to their queues; seconds until the next is due."""
        state = self._state
        now = time.monotonic()
        while state.delayed and state.delayed[0][0] <= now:
            _, _, job_id, origin = heapq.heappop(state.delayed)
            state.queues[origin].append(job_id)
        return state.delayed[0][0] - now if state.delayed else None

    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        """See :meth:`Broker.finish_jobs`."""
        keep = check_ttl(keep_finished)
        with self._state.cond:
            return self._finish(worker, job_ids, keep)

    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        """See :meth:`Broker.finish_with_result`; kept for ``ttl`` seconds on this process's clock."""
        check_ttl(ttl)
        state = self._state
        with state.cond:
            [held] = self._finish(worker, [job_id])
            if held:
                if len(state.results) >= RESULTS_SWEEP_AT:  # results nobody read: drop the expired
                    now = time.monotonic()
                    state.results = {k: v for k, v in state.results.items() if v[3] > now}
                state.results[job_id] = (result, time.time(), worker, time.monotonic() + ttl)
                state.cond.notify_all()
            return held

    def job_status(self, job_id: str) -> JobState:
        """See :meth:`Broker.job_status`."""
        state = self._state
        with state.cond:
            self._promote_due()
            entry = state.failed.get(job_id)
            if entry is not None:
                job, failure = decode_job(entry.job), decode_failure(entry.failure)
                return JobState(
                    job_id=job_id,
                    state=State.FAILED,
                    job=job,
                    queue=queue_label(job),
                    worker=failure.worker,
                    failure=failure,
                )
            text = state.jobs.get(job_id)
            if text is not None:
                job = decode_job(text)
                holder = next((w for w, held in state.held.items() if job_id in held), None)
                if holder is not None and state.held[holder][job_id] != _WORKERS_MANAGER:
                    jobs, expiry = state.running.get(holder, ({}, 0.0))
                    since = jobs.get(job_id) if expiry > time.monotonic() else None
                    label = queue_label(job)
                    return JobState(
                        job_id=job_id, state=State.HELD, job=job, queue=label, worker=holder, since=since
                    )
                due = next((due for due, _, i, _ in state.delayed if i == job_id), None)
                if due is not None:
                    at = time.time() + (due - time.monotonic())
                    return JobState(
                        job_id=job_id, state=State.DELAYED, job=job, queue=queue_label(job), due_at=at
                    )
                return JobState(job_id=job_id, state=State.QUEUED, job=job, queue=queue_label(job))
            return self._ended_state(job_id)

    def _ended_state(self, job_id: str) -> JobState:
        """The state of a job that is not stored: succeeded while remembered, else unknown;
        the caller holds the lock."""
        found = self._result(job_id)
        if found is not None:
            return JobState(
                job_id=job_id,
                state=State.SUCCEEDED,
                worker=found.worker,
                result=found,
                finished_at=found.finished_at,
            )
        noted = self._state.finished.get(job_id)
        if noted is not None and noted[1] > time.monotonic():
            return JobState(job_id=job_id, state=State.SUCCEEDED, finished_at=noted[0])
        return JobState(job_id=job_id, state=State.UNKNOWN)

    def get_result(self, job_id: str) -> JobResult | None:
        """See :meth:`Broker.get_result`."""
        with self._state.cond:
            return self._result(job_id)

    def wait_result(self, job_id: str, timeout: float) -> JobResult | None:
        """See :meth:`Broker.wait_result`."""
        deadline = time.monotonic() + max(0.0, timeout)
        state = self._state
        with state.cond:
            while (found := self._result(job_id)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                state.cond.wait(remaining)
            return found

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

    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        """See :meth:`Broker.fail_job`. The failed job stays readable with :meth:`get_job`;
        its ``failed_at`` is this process's clock at the time it is recorded."""
        text = self._encode(attrs.evolve(job, attempts=job.attempts + 1))  # the failed run counts
        state = self._state
        with state.cond:
            if not self._holds(worker, job.id):
                return False
            origin = self._unhold(worker, job.id)
            del state.jobs[job.id]
            state.recoveries.pop(job.id, None)
            state.suspects.discard(job.id)
            self._ended(job.id)
            self._add_failed(job.id, text, failure, origin, limits)
            return True

    def _add_failed(
        self, job_id: str, text: str, failure: Failure, origin: Origin, limits: FailedLimits
    ) -> None:
        """Record a failed job, stamped with this broker's clock, and trim the registry;
        the caller holds the lock."""
        now = time.time()
        failure_text = encode_failure(attrs.evolve(failure, failed_at=now))
        self._state.failed.pop(job_id, None)  # a newer failure of the same id goes last
        self._state.failed[job_id] = _Failed(text, failure_text, origin, now)
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

    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        """See :meth:`Broker.retry_job`. The job goes to the back of its queue when due."""
        text = self._encode(attrs.evolve(job, attempts=job.attempts + 1))
        state = self._state
        with state.cond:
            if not self._holds(worker, job.id):
                return False
            origin = self._unhold(worker, job.id)
            state.jobs[job.id] = text
            state.suspects.discard(job.id)  # it ran and raised: no crash
            if delay > 0:
                due = time.monotonic() + delay
                heapq.heappush(state.delayed, (due, next(state.sequence), job.id, origin))
            else:
                state.queues[origin].append(job.id)
            state.cond.notify_all()  # also makes blocked takers recompute their wait
            return True

    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        """See :meth:`Broker.release_jobs`; released jobs keep the order they had."""
        state = self._state
        count = 0
        with state.cond:
            for job_id in reversed(list(dict.fromkeys(job_ids))):
                if self._holds(worker, job_id):
                    state.queues[self._unhold(worker, job_id)].appendleft(job_id)
                    count += 1
            state.cond.notify_all()
        return count

    def _holds(self, worker: str, job_id: str) -> bool:
        return job_id in self._state.held.get(worker, {})

    def _unhold(self, worker: str, job_id: str) -> Origin:
        """Take a held ``job_id`` off ``worker``'s held list; the queue it goes back to."""
        origin = self._state.held[worker].pop(job_id)
        return self._manager_of(worker) if origin == _WORKERS_MANAGER else origin

    def _manager_of(self, worker: str) -> str | None:
        """The manager of a worker that holds a job it never took (a rare case)."""
        for manager, workers in self._state.workers.items():
            if worker in workers:
                return manager
        head, dot, _ = worker.rpartition(".")  # the <manager>.<pid> convention
        return head if dot and head else None

    def recover_worker(
        self,
        *,
        manager: str,
        worker: str,
        max_recoveries: int | None = None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
    ) -> int:
        """See :meth:`Broker.recover_worker`.

        Recovered jobs go to the *front* of their queues, in the order the worker held
        them: they were queued before anything still waiting there.
        """
        self.check_name(manager)
        self.check_name(worker)
        with self._state.cond:
            return self._recover(manager, worker, max_recoveries, crashed_job, suspects).requeued

    def _recover(
        self,
        manager: str,
        worker: str,
        max_recoveries: int | None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
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
            back_to = manager if origin == _WORKERS_MANAGER else origin
            if max_recoveries is not None and crashed_job in (None, job_id):
                state.recoveries[job_id] = count = state.recoveries.get(job_id, 0) + 1
                if count > max_recoveries:
                    poison.append((job_id, back_to))
                    continue
            if origin == _WORKERS_MANAGER:
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
            self._add_failed(job_id, text, failure, back_to, DEFAULT_FAILED_LIMITS)
        state.cond.notify_all()
        return Reaped(manager=manager, worker=worker, requeued=requeued, failed=len(poison))

    # -- liveness --------------------------------------------------------------------

    def beat(
        self,
        *,
        manager: str,
        token: str,
        workers: Mapping[str, str],
        ttl: float,
        running: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, str | None]:
        """See :meth:`Broker.beat`."""
        for name in (manager, *workers):
            self.check_name(name)
        state = self._state
        with state.cond:
            now = time.monotonic()
            changed: dict[str, str | None] = {}
            for name, mine in ((manager, token), *workers.items()):
                previous = state.heartbeats[name][0] if state.alive(name, now) else None
                if previous != mine:
                    changed[name] = previous
                state.heartbeats[name] = (mine, now + ttl)
            state.managers.add(manager)
            state.beating[manager] = token
            state.workers[manager].update(workers)
            for worker, jobs in (running or {}).items():
                state.running[worker] = (dict(jobs), now + ttl)
            return changed

    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        """See :meth:`Broker.heartbeat_of`."""
        with self._state.cond:
            now = time.monotonic()
            if not self._state.alive(name, now):
                return None
            token, expires = self._state.heartbeats[name]
            return token, expires - now

    def reap(
        self, *, owner: str, lease: float, ttl: float, max_recoveries: int | None = 3
    ) -> list[Reaped] | None:
        """See :meth:`Broker.reap`; the server never restarts, so ``ttl`` is not used."""
        state = self._state
        with state.cond:
            now = time.monotonic()
            if lease > 0:
                if state.lease is not None and state.lease[1] > now:
                    return None
                state.lease = (owner, now + lease)
            reaped = [
                self._recover(manager, worker, max_recoveries)
                for manager in sorted(state.beating)
                for worker in sorted(state.workers.get(manager, ()))
                if not state.alive(worker, now)
            ]
            for manager in list(state.beating):
                if not state.alive(manager, now) and not state.workers.get(manager):
                    del state.beating[manager]
                    state.managers.discard(manager)
            return reaped

    # -- membership ------------------------------------------------------------------

    def register_manager(self, name: str) -> None:
        """See :meth:`Broker.register_manager`."""
        self.check_name(name)
        with self._state.cond:
            self._state.managers.add(name)

    def deregister_manager(self, name: str) -> None:
        """See :meth:`Broker.deregister_manager`."""
        self.check_name(name)
        with self._state.cond:
            self._state.managers.discard(name)
            self._state.beating.pop(name, None)
            self._state.heartbeats.pop(name, None)

    def register_worker(self, *, manager: str, worker: str) -> None:
        """See :meth:`Broker.register_worker`."""
        self.check_name(manager)
        self.check_name(worker)
        with self._state.cond:
            self._state.workers[manager].add(worker)

    def deregister_worker(self, *, manager: str, worker: str) -> None:
        """See :meth:`Broker.deregister_worker`; jobs the worker holds stay held."""
        self.check_name(manager)
        self.check_name(worker)
        with self._state.cond:
            self._state.workers[manager].discard(worker)
            self._state.heartbeats.pop(worker, None)

    # -- read-only queries -----------------------------------------------------------

    def stray_queues(self) -> dict[str, int]:
        """See :meth:`Broker.stray_queues`."""
        state = self._state
        with state.cond:
            self._promote_due()
            found = {
                name: len(ids)
                for name, ids in state.queues.items()
                if name is not None and not name.startswith(_NAMED) and ids
            }
            for worker, held in state.held.items():
                if held:
                    found[worker] = found.get(worker, 0) + len(held)
            now = time.monotonic()
            return {name: count for name, count in sorted(found.items()) if not self._running(name, now)}

    def _running(self, name: str, now: float) -> bool:
        return name in self._state.managers or self._worker_running(name, now)

    def _worker_running(self, name: str, now: float) -> bool:
        """Registered as a worker, or beating and not a manager."""
        state = self._state
        if any(name in workers for workers in state.workers.values()):
            return True
        return name not in state.managers and state.alive(name, now)

    def move_queued(self, name: str, *, to: str | None = None) -> int:
        """See :meth:`Broker.move_queued`."""
        self.check_name(name)
        if to is not None:
            self.check_name(to)
        state = self._state
        with state.cond:
            held = state.held.get(name)
            if held and self._worker_running(name, time.monotonic()):
                raise WorkerRunning(f"worker {name} is running: the jobs on its list are its own")
            moving = list(state.queues.pop(name, ()))
            if held:
                moving += list(held)
                held.clear()
            state.queues[to].extend(moving)
            state.cond.notify_all()
            return len(moving)

    def managers(self) -> list[str]:
        """See :meth:`Broker.managers`."""
        with self._state.cond:
            return sorted(self._state.managers)

    def workers(self, manager: str) -> list[str]:
        """See :meth:`Broker.workers`."""
        with self._state.cond:
            return sorted(self._state.workers.get(manager, ()))

    def queued_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.queued_job_ids`. Delayed jobs are listed once they are due."""
        check_page(offset, limit)
        origin = self._listed(manager, queue)
        with self._state.cond:
            self._promote_due()
            return _page(self._state.queues.get(origin, ()), offset, limit)

    def queued_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        """See :meth:`Broker.queued_count`: the queue's length, without listing it."""
        origin = self._listed(manager, queue)
        with self._state.cond:
            self._promote_due()
            return len(self._state.queues.get(origin, ()))

    def held_count(self, worker: str) -> int:
        """See :meth:`Broker.held_count`."""
        with self._state.cond:
            return len(self._state.held.get(worker, ()))

    def _listed(self, manager: str | None, queue: str | None) -> Origin:
        manager, queue = check_listed(manager, queue)
        for name in (manager, queue):
            if name is not None:
                self.check_name(name)
        return manager if manager is not None else _named(queue)

    def named_queues(self) -> list[str]:
        """See :meth:`Broker.named_queues`."""
        with self._state.cond:
            origins = {*self._state.queues, *(entry[3] for entry in self._state.delayed)}
        return sorted(o[len(_NAMED) :] for o in origins if o is not None and o.startswith(_NAMED))

    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        """See :meth:`Broker.held_job_ids`; oldest first."""
        check_page(offset, limit)
        with self._state.cond:
            return _page(self._state.held.get(worker, ()), offset, limit)

    def get_job(self, job_id: str) -> Job | None:
        """See :meth:`Broker.get_job`: queued, held, delayed and failed jobs are stored."""
        with self._state.cond:
            text = self._state.jobs.get(job_id)
            if text is None and job_id in self._state.failed:
                text = self._state.failed[job_id].job
        return None if text is None else decode_job(text)

    def delayed_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.delayed_job_ids`."""
        check_page(offset, limit)
        wanted = self._listed(manager, queue)
        with self._state.cond:
            self._promote_due()
            due = (job_id for _, _, job_id, origin in sorted(self._state.delayed) if origin == wanted)
            return _page(due, offset, limit)

    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        """See :meth:`Broker.failed_jobs`."""
        with self._state.cond:
            newest = list(reversed(self._state.failed.items()))[: max(0, limit)]
            found = [(entry.job, entry.failure) for _, entry in newest]
        return [FailedJob(job=decode_job(job), failure=decode_failure(failure)) for job, failure in found]

    def failed_jobs_page(self, *, offset: int = 0, limit: int = 100) -> list[FailedJob]:
        """See :meth:`Broker.failed_jobs_page`: only the page's entries are decoded."""
        check_page(offset, limit)
        with self._state.cond:
            newest = reversed(self._state.failed.values())
            found = [(e.job, e.failure) for e in itertools.islice(newest, offset, offset + limit)]
        return [FailedJob(job=decode_job(job), failure=decode_failure(failure)) for job, failure in found]

    def running_jobs(self, manager: str) -> list[RunningJob]:
        """See :meth:`Broker.running_jobs`."""
        self.check_name(manager)
        state = self._state
        with state.cond:
            now = time.monotonic()
            found = []
            for worker in sorted(state.workers.get(manager, ())):
                jobs, expiry = state.running.get(worker, ({}, 0.0))
                if expiry <= now:
                    continue
                for job_id in sorted(jobs):
                    text = state.jobs.get(job_id)
                    label = None if text is None else queue_label(decode_job(text))
                    found.append(RunningJob(job_id=job_id, worker=worker, since=jobs[job_id], queue=label))
            return found

    def note_jobs_run(self, *, manager: str, count: int) -> None:
        """See :meth:`Broker.note_jobs_run`; the last :data:`KEEP_MINUTES` minutes are kept."""
        super().note_jobs_run(manager=manager, count=count)
        self.check_name(manager)
        minute = int(time.time() // 60) * 60
        with self._state.cond:
            counts = self._state.jobs_run.setdefault(minute, {})
            counts[manager] = counts.get(manager, 0) + count
            for old in [m for m in self._state.jobs_run if m <= minute - 60 * KEEP_MINUTES]:
                del self._state.jobs_run[old]

    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        """See :meth:`Broker.jobs_run`."""
        check_minutes(minutes)
        now = int(time.time() // 60) * 60
        with self._state.cond:
            return [
                JobsRun(minute=minute, counts=dict(self._state.jobs_run.get(minute, {})))
                for minute in range(now - 60 * (minutes - 1), now + 1, 60)
            ]

    def failed_count(self) -> int:
        """See :meth:`Broker.failed_count`."""
        with self._state.cond:
            return len(self._state.failed)

    def job_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """See :meth:`Broker.job_ids_with_prefix`."""
        with self._state.cond:
            state = self._state
            known = dict.fromkeys([*state.jobs, *state.failed, *state.results, *state.finished])
            found = (job_id for job_id in known if job_id.startswith(prefix))
            return list(itertools.islice(found, max(0, limit)))

    def failed_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """See :meth:`Broker.failed_ids_with_prefix`."""
        with self._state.cond:
            found = (job_id for job_id in self._state.failed if job_id.startswith(prefix))
            return list(itertools.islice(found, max(0, limit)))

    def get_failed(self, job_id: str) -> FailedJob | None:
        """See :meth:`Broker.get_failed`."""
        with self._state.cond:
            entry = self._state.failed.get(job_id)
        if entry is None:
            return None
        return FailedJob(job=decode_job(entry.job), failure=decode_failure(entry.failure))

    def requeue_failed(self, job_id: str) -> bool:
        """See :meth:`Broker.requeue_failed`; the job goes to the back of its queue."""
        state = self._state
        with state.cond:
            if job_id in state.jobs:  # a live job has this id: leave both alone
                return False
            entry = state.failed.get(job_id)
            if entry is None:
                return False
            job = decode_job(entry.job)
            unique = unique_of(job)
            if unique is not None and unique.key is not None:  # it takes its key again, if free
                now = time.monotonic()
                holder = state.unique.holder(unique.key, stored=self._stored, started=self._started, now=now)
                if holder is not None and holder != job_id:
                    return False
                if holder is None:
                    state.unique.claim(unique, job_id, now=now)
            del state.failed[job_id]
            state.jobs[job_id] = encode_job(attrs.evolve(job, attempts=0))
            state.queues[entry.origin].append(job_id)
            state.cond.notify_all()
            return True

    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        """See :meth:`Broker.purge_failed`."""
        state = self._state
        with state.cond:
            doomed = list(state.failed) if job_ids is None else [i for i in job_ids if i in state.failed]
            for job_id in dict.fromkeys(doomed):
                del state.failed[job_id]
            return len(set(doomed))

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str | None = None) -> MemoryBroker:
        """A new, empty broker for ``None`` or ``"memory://"``.

        :raises ConfigurationError: any other URL.
        """
        if url not in (None, "memory://"):
            raise ConfigurationError(f"the memory backend takes no URL but 'memory://', not {url!r}")
        return cls()

    # -- periodic jobs ------------------------------------------------------------------

    def now(self) -> float:
        """See :meth:`Broker.now`: the broker's clock (``clock``, or this host's)."""
        return float(self._clock())

    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        """See :meth:`Broker.enqueue_tick`: checked, recorded and queued under one lock."""
        self.check_name(manager)
        if job.worker is not None or job.manager is not None:
            raise InvalidJob(
                f"job {job.id} of a tick names a manager or worker: a tick's job goes to a queue"
            )
        text = self._encode(job)  # refused before anything is written
        unique = unique_of(job)
        state = self._state
        with state.cond:
            last = state.schedules.newer(schedule_id, tick)
            if last is not None:
                return TickResult(enqueued=False, last=last)
            job_id = job.id
            if job.id not in state.jobs:
                # A unique job is queued only if it takes its key; else the holder is the tick's job.
                holder = None
                if unique is not None and unique.key is not None:
                    now = time.monotonic()
                    holder = state.unique.holder(
                        unique.key, stored=self._stored, started=self._started, now=now
                    )
                    if holder is None:
                        state.unique.claim(unique, job.id, now=now)
                if holder is not None:
                    job_id = holder
                else:
                    state.jobs[job.id] = text
                    state.queues[_named(job.queue)].append(job.id)
                    state.cond.notify_all()
            recorded = TickState(tick=float(tick), manager=manager, at=self.now(), job_id=job_id)
            state.schedules.ticks[schedule_id] = recorded
            return TickResult(enqueued=True, last=recorded)

    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        """See :meth:`Broker.declare_schedules`."""
        self.check_name(manager)
        with self._state.cond:
            return self._state.schedules.declare(manager, declarations, ttl)

    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        """See :meth:`Broker.schedule_declarations`."""
        with self._state.cond:
            return self._state.schedules.live()

    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        """See :meth:`Broker.tick_states`."""
        with self._state.cond:
            return self._state.schedules.states(schedule_ids)

    def factory(self) -> MemoryFactory:
        """Opens clients of this broker in any process; the first call starts the server."""
        state = self._state
        with state.cond:
            if state.server is None:
                state.server = MemoryServer(self)
            return state.server.factory

    def check_name(self, name: str) -> str:
        """See :meth:`Broker.check_name` and :func:`check_name`."""
        return check_name(name)

    def close(self) -> None:
        """Stop the server of :meth:`factory`, if one runs; its clients are cut off."""
        with self._state.cond:
            server, self._state.server = self._state.server, None
        if server is not None:
            server.close()

    def describe(self) -> str:
        """``memory://``."""
        return "memory://"


def _page(ids: Iterable[str], offset: int, limit: int | None) -> list[str]:
    """The ``limit`` ids (``None``: all the rest) of ``ids`` from position ``offset`` on."""
    return list(itertools.islice(ids, offset, None if limit is None else offset + limit))
