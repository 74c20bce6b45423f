"""The Redis backend: :class:`RedisBroker`, speaking the original qw key schema.

Keys are in :mod:`qw_redis.keys`, the hash encoding in :mod:`qw_redis.codec`, and every
operation touching more than one key is a Lua script (:mod:`qw_redis.scripts`), so each
broker method is one round trip, except a ``take`` that has to wait.

Waiting. An idle worker does not poll: :meth:`RedisBroker.take` runs ``take.lua`` and,
finding nothing, blocks in ``BLPOP qw:wake:<w> qw:wake:<m> qw:wake:all`` for at most
``RedisOptions.block_slice`` (0.5 s) at a time, then runs ``take.lua`` again. Jobs
queued through qw push a token onto the wake list of their queue (a job sent to a worker
directly, onto the worker's own), so a job for a manager wakes its workers as fast as a
shared one (the original made it wait up to 10 s behind ``BRPOPLPUSH all:jobs``). A job
pushed by hand sends no token and is seen at the next slice. A token only means "look
again": the job itself never leaves its queue except by ``take.lua``, so a popped token
cannot lose a job, and ``take.lua`` deletes the tokens of a queue it finds empty so stale
ones do not make workers spin.

Hand-off. A wake-up costs a woken worker a second round trip (the take), so a job queued
while workers wait skips it: the take that found nothing registers the worker as waiting
(``qw:idling:<w>``, listed in ``qw:idle:<m>`` and ``qw:idle:all``), and ``queue.lua``
takes the job on a waiting worker's behalf, exactly as ``take.lua`` would (the id onto
the tail of ``<w>:jobs``, its origin recorded), and puts its data on
``qw:handoff:<w>``, one of the keys the worker's ``BLPOP`` waits on: the job arrives with
the reply of the wait. The job is held from the moment it is queued, so a lost reply
loses nothing (the next take hands the job out as a leftover, and deletes the unread
entry so it cannot run twice) and a worker that dies has it recovered with the rest of
its list. A take never returns with its worker still registered, and a worker's
recovery ends its registration, so no job is handed to a worker that does not wait.

Delayed jobs. Before it blocks, an idle taker moves the due delayed jobs and learns when
the next one is due; queueing or retrying a delayed job pushes a token, so a blocked
taker learns of an earlier due time too. Redis ends a blocking wait only on a tick of its
timer (``1 / hz``, 100 ms by default), so the taker blocks until a tick before the due
time and waits out the rest itself, looking again every :data:`DUE_STEP` (5 ms): a due
job starts within milliseconds, and so does a job queued in that last tick.

Where a job goes back to (retry, release, recovery) is recorded by ``take.lua`` in
``qw:origin`` when the job is taken, for qw's jobs and hand-written ones alike, so no
script has to parse a job's JSON.

Unreadable jobs. A hash over ``max_job_size`` (checked inside ``take.lua``, so its data
never crosses the network) or one whose qw marker cannot be decoded is not handed to the
target: the broker moves it to the failed registry with a ``Failure`` of kind
``"invalid"``, keeping the hash untouched under ``qw:invalid:<id>`` so that
:meth:`RedisBroker.requeue_failed` can restore it (after the limit is raised, say).
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import attrs
import redis
import redis.sentinel

from qw_core.broker import (
    Broker,
    BrokerFactory,
    Capabilities,
    Reaped,
    check_delay,
    check_listed,
    check_minutes,
    check_page,
)
from qw_core.errors import (
    BrokerUnavailable,
    InvalidJob,
    InvalidName,
    JobCrashed,
    JobsNotReplicated,
    JobTooLarge,
    QwError,
    WorkerRunning,
)
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
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.results import JobResult, check_ttl, decode_value
from qw_core.unique import UNIQUE_META, Queued, Unique, unique_of
from qw_redis import codec, connection, keys, sentinel, ticks
from qw_redis.connection import DEFAULT_URL, RedisOptions
from qw_redis.scripts import FailedEntry, Scripts, Taken, handed_off, holders

log = logging.getLogger("qw.redis")

_P = ParamSpec("_P")
_R = TypeVar("_R")
#: Most jobs, hash fields and bytes of job data (:meth:`codec.Stored.size`) one queueing
#: script call stores: Redis serves nobody else while a script runs, so each call is kept
#: to a few milliseconds (500 small jobs: about 5 ms on a busy 2-core VM; 4,000 fields:
#: 3-4 ms; 256 KiB in large fields: about 1 ms).
QUEUE_BATCH = 500
QUEUE_BATCH_FIELDS = 4000
QUEUE_BATCH_BYTES = 256 * 1024
#: Most failed jobs one purge_failed.lua call deletes.
PURGE_BATCH = 1000
#: Most jobs one fail.lua call moves to the failed registry (a record holds a traceback:
#: a few KiB at most, as Python shortens deep recursion).
FAIL_BATCH = 100
#: Keys one reaper round's SCAN looks at for markers left behind (see ``_sweep_markers``).
SWEEP_STEP = 500
#: How long a nudge nobody waited for is kept (see :meth:`RedisBroker.nudge`).
NUDGE_TTL_MS = 60_000
#: Most jobs one call of ``move.lua`` moves (:meth:`RedisBroker.move_queued`).
MOVE_BATCH = 1000
#: Most ids one command of a listing reads (``LRANGE``, ``ZRANGE``, ``HMGET``): one
#: ``LRANGE all:jobs 0 -1`` of a million ids held Redis, and every worker, for 0.1 s.
READ_CHUNK = 1000
#: Most failed jobs one ``requeue_failed_batch.lua`` call requeues, and one page of the
#: records it reads (a call takes about 1 ms on a 2-core VM).
REQUEUE_BATCH = 100
#: Most bytes of jobs one ``requeue_failed_batch.lua`` call stores (at least one job): jobs
#: may be up to 512 KiB each, and decoding a call's arguments is part of its time.
REQUEUE_BYTES = 1 << 20
#: Most failed jobs one ``purge_failed_upto.lua`` call deletes (about 1.5 ms).
PURGE_BATCH = 500
#: Seconds a minute's count of jobs begun is kept (``qw:jobs-run:<minute>``): the contract
#: asks for an hour at least.
JOBS_RUN_KEEP = 2 * 3600
#: Shortest blocking wait worth a round trip, in seconds.
_MIN_BLOCK = 0.01
#: Least lifetime of a waiting worker's registration (``qw:idling:<w>``, see ``queue.lua``),
#: in milliseconds; it is also at least four blocking slices. A take deletes it; it
#: expires only when a worker stopped taking without one (it died, or was paused), after
#: which no job is handed to it.
IDLING_MIN_MS = 2_000
#: Within a timer tick of the next due time a taker waits here, not in Redis, looking
#: again this often (seconds): a job queued meanwhile may be due sooner.
DUE_STEP = 0.005
#: Seconds between two log lines about the same queue key of the wrong type.
BROKEN_REPORT_EVERY = 60.0
#: Redis's timer period when the server does not say (``INFO`` without ``hz``): its default.
DEFAULT_TIMER_TICK = 0.1
#: Seconds between two questions to the Sentinels of where the primary is (see
#: :meth:`RedisBroker._follow_primary`): the longest a broker keeps writing to a primary
#: that was demoted but lives on.
FOLLOW_EVERY = 0.25


_Method = Callable[Concatenate["RedisBroker", _P], _R]
#: One call of a queueing script: the jobs it stores (id, hash), and the call, which
#: takes an optional ``pipe=`` to be queued on instead (see ``Scripts.replicated``).
_Storing = tuple[list[tuple[str, codec.Stored]], Callable[..., dict[int, str]]]


#: Broker methods after which a failover that already happened is not reported: a
#: producer's call goes to the new primary without a word (see ``_follow_primary``).
_QUIET_ON_MOVE = frozenset({"queue_jobs"})


def _translated(method: _Method[_P, _R]) -> _Method[_P, _R]:
    """Turn the redis errors ``method`` raises into qw errors, at the boundary; follow a
    Sentinel-managed primary that moved (see :meth:`RedisBroker._follow_primary`)."""
    quiet = method.__name__ in _QUIET_ON_MOVE

    @functools.wraps(method)
    def wrapper(self: RedisBroker, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            if self._follow_at is not None:
                self._follow_primary(quiet=quiet)
            return method(self, *args, **kwargs)
        except redis.RedisError as exc:
            if connection.is_failover(exc):  # connected to a node that is no master now
                self._client.connection_pool.disconnect()
            raise self._error(exc) from exc

    return wrapper


def _on_pipe(call: Callable[..., Any], pipe: Any) -> Any:
    """``call`` queued on ``pipe`` (see ``_Storing``)."""
    return call(pipe=pipe)


def _valid_name(name: str) -> bool:
    try:
        keys.check_name(name)
    except InvalidName:  # written by something else: no key of ours can be built from it
        return False
    return True


#: qw's own keys, and the type each must have (:meth:`RedisBroker.problems` checks them).
_OWN_KEY_TYPES = (
    ("ALL_MANAGERS", "set"),
    ("MANAGERS", "hash"),
    ("ORIGIN", "hash"),
    ("DUE", "zset"),
    ("LEGACY_DELAYED", "zset"),
    ("FAILED", "zset"),
    ("RECOVERIES", "hash"),
    ("QUEUES", "set"),
    ("SCHEDULERS", "set"),
)


_Item = TypeVar("_Item", bound=tuple[Any, ...])


def _script_batches(jobs: list[_Item], *, at: int = 1) -> Iterator[list[_Item]]:
    """``jobs`` (tuples holding a job's :class:`codec.Stored` at position ``at``) in order,
    cut into the batches one queueing script call stores: at most :data:`QUEUE_BATCH` jobs,
    :data:`QUEUE_BATCH_FIELDS` fields and :data:`QUEUE_BATCH_BYTES` bytes (a single job
    over a bound goes alone)."""
    batch: list[_Item] = []
    fields = size = 0
    for item in jobs:
        stored: codec.Stored = item[at]
        more_fields, more_bytes = len(stored.fields) + 1, stored.size()
        full = len(batch) == QUEUE_BATCH or fields + more_fields > QUEUE_BATCH_FIELDS
        if batch and (full or size + more_bytes > QUEUE_BATCH_BYTES):
            yield batch
            batch, fields, size = [], 0, 0
        batch.append(item)
        fields += more_fields
        size += more_bytes
    if batch:
        yield batch


def _glob_escaped(text: str) -> str:
    """``text`` with Redis's glob characters escaped, for a ``MATCH`` that takes it literally."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _raw(text: str) -> bytes:
    """The bytes Redis holds for ``text`` (read with surrogateescape, see
    :mod:`qw_redis.connection`), which it sorts members of equal score by."""
    return text.encode("utf-8", "surrogateescape")


def _by_size(
    jobs: Sequence[tuple[str, float, codec.Stored, Unique | None]], most: int
) -> Iterator[list[tuple[str, float, codec.Stored, Unique | None]]]:
    """``jobs`` in order, in runs of at most ``most`` bytes each (a larger job alone)."""
    run: list[tuple[str, float, codec.Stored, Unique | None]] = []
    size = 0
    for job in jobs:
        job_size = job[2].size()
        if run and size + job_size > most:
            yield run
            run, size = [], 0
        run.append(job)
        size += job_size
    if run:
        yield run


def _failed_job(record: str, failure: str, at: float | None) -> FailedJob:
    """A failed job as the registry keeps it, with the server's time of the failure (its
    score in ``qw:failed``) as ``failed_at``: the time every host agrees on."""
    why = codec.decode_failure(failure)
    if at is not None:
        why = attrs.evolve(why, failed_at=float(at))
    return FailedJob(job=codec.decode_record(record), failure=why)


def _number(text: str) -> float | None:
    """``text`` as a finite number, or ``None`` (a time another program wrote, say)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _origin_label(origin: str | None) -> str | None:
    """The queue a ``qw:origin`` value stands for, as :attr:`JobState.queue` names it."""
    if origin is None:
        return None
    if origin == keys.SHARED_ORIGIN:
        return DEFAULT_QUEUE
    named = keys.named_queue(origin)
    return named if named is not None else f"manager:{origin}"


class RedisBroker(Broker):
    """A :class:`~qw_core.broker.Broker` on Redis 6.2 or newer (or fakeredis with Lua).

    :param client: any redis-py or fakeredis client (decoding replies or not): the broker
        talks to its server with its settings, through a client of its own that decodes
        the way qw needs (:func:`qw_redis.connection.qw_client`), and never closes
        ``client``. :meth:`from_url` opens one the broker owns.
    :param options: job size limit, blocking slice, and connection settings (the latter
        used when this broker opens clients, in :meth:`from_url` and its factory).
    :param url: the URL ``client`` was opened from, if known (for :meth:`describe` and
        :meth:`factory`; otherwise both are derived from the client's settings).
    :param schema: the keyspace (single-node: the original schema, no prefix; one shard
        of a Redis Cluster: its hash tag before every key, see :mod:`qw_redis.cluster`).
    """

    capabilities = Capabilities(
        multi_host=True, max_take=100, delayed=True, schedules=True, throughput=True, unique=True
    )

    def __init__(
        self,
        client: redis.Redis,
        options: RedisOptions | None = None,
        *,
        url: str | None = None,
        schema: keys.KeySchema = keys.SINGLE_NODE,
    ) -> None:
        self._client = connection.qw_client(client)
        self._keys = schema
        self._options = options or RedisOptions()
        self._url = url
        self._owns_client = self._client is not client  # a derived client is ours to close
        self._scripts = Scripts(self._client, schema)
        self._names: set[str] = set()
        self._broken_reported: dict[str, float] = {}  # queue key -> when last logged
        self._tick: float | None = None  # Redis's timer period, read on first need
        self._sweep_cursor = 0  # where the sweep of markers left behind goes on
        kwargs = self._client.connection_pool.connection_kwargs
        self._fake = self._client.connection_pool.connection_class.__module__.startswith("fakeredis")
        socket_timeout = kwargs.get("socket_timeout")
        slice_ = self._options.block_slice
        self._slice = min(slice_, socket_timeout / 2) if socket_timeout else slice_
        self._idling_ms = max(IDLING_MIN_MS, round(4000 * self._slice))
        #: When to ask the Sentinels next where the primary is (None: no Sentinel).
        self._follow_at = 0.0 if sentinel.is_sentinel_pool(self._client.connection_pool) else None

    # -- producing ---------------------------------------------------------------------------

    @_translated
    def queue_jobs(self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None) -> list[str]:
        for job in jobs:
            if job.meta and UNIQUE_META in job.meta:
                return [queued.id for queued in self._queue(jobs, delay, at)]
        self._queue(jobs, delay, at, uniques=False)
        return [job.id for job in jobs]

    @_translated
    def queue_jobs_unique(
        self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None
    ) -> list[Queued]:
        """See :meth:`Broker.queue_jobs_unique`: ``queue.lua`` (``queue_delayed.lua``)
        checks and takes each key in the step that stores its job."""
        return self._queue(jobs, delay, at)

    def _queue(
        self, jobs: Sequence[Job], delay: float, at: float | None, *, uniques: bool = True
    ) -> list[Queued]:
        """Queue ``jobs``, grouped by where each goes (or, delayed, by the queue it goes to
        when due); what became of each (with ``uniques`` false: none has a key, and the
        answer is empty)."""
        waits = check_delay(jobs, delay, at)
        batches: dict[tuple[str, bool], list[tuple[int, str, codec.Stored, Unique | None]]] = {}
        for index, job in enumerate(jobs):  # encode (and refuse) everything before anything is written
            place = (self._origin_of(job), job.worker is not None and not waits)
            unique = unique_of(job) if uniques else None
            if unique is not None:
                codec.check_new_id(unique.key or "")
            batches.setdefault(place, []).append((index, job.id, self._encode_new(job), unique))
        calls: list[_Storing] = []
        positions: list[list[int]] = []
        for (origin, to_worker), batch in batches.items():
            for part in _script_batches(batch, at=2):
                stored = [(job_id, encoded) for _, job_id, encoded, _ in part]
                keyed = [unique for *_, unique in part] if uniques else None
                if waits:
                    call = functools.partial(
                        self._scripts.queue_delayed,
                        origin=origin,
                        delay=delay,
                        at=at,
                        jobs=stored,
                        uniques=keyed,
                    )
                else:
                    call = functools.partial(
                        self._scripts.queue, origin=origin, worker=to_worker, jobs=stored, uniques=keyed
                    )
                calls.append((stored, call))
                positions.append([index for index, *_ in part])
        replies = self._store(calls)
        if not uniques:
            return []
        done = [Queued(job.id, True) for job in jobs]
        for reply, where in zip(replies, positions, strict=True):
            for position, holder in reply.items():
                done[where[position]] = Queued(holder, False)
        return done

    def _store(self, calls: Sequence[_Storing]) -> list[dict[int, str]]:
        """Make each call, which stores the jobs it lists; with ``wait_replicas``, each
        returns only once that many replicas have what it wrote (Redis's ``WAIT``). What
        each call answered (see :func:`qw_redis.scripts.holders`).

        :raises JobsNotReplicated: fewer replicas acknowledged a call in time: its jobs are
            queued, the later calls' are not (the message says what to do).
        """
        wanted = self._options.wait_replicas
        timeout_ms = max(1, round(self._options.wait_timeout * 1000))
        replies = []
        for index, (_, call) in enumerate(calls):
            if not wanted:
                replies.append(call())
                continue
            reply, acknowledged = self._scripts.replicated(
                functools.partial(_on_pipe, call), wanted, timeout_ms
            )
            if acknowledged < wanted:
                raise self._not_replicated(calls, index, acknowledged)
            replies.append(holders(reply))
        return replies

    def _not_replicated(self, calls: Sequence[_Storing], index: int, acknowledged: int) -> JobsNotReplicated:
        """The error for call ``index`` of ``calls``, which ``acknowledged`` replicas acknowledged."""
        ids = tuple(job_id for job_id, _ in calls[index][0])
        wanted, within = self._options.wait_replicas, f"{self._options.wait_timeout:g}s"
        return JobsNotReplicated(
            f"{len(ids)} job(s) are queued on the primary of {self.describe()}, but {acknowledged} of the "
            f"{wanted} replica(s) asked for acknowledged them within {within}: they run unless the primary "
            "fails before passing them on; do not queue them again as new jobs, or they run twice",
            job_ids=ids,
            confirmed=tuple(job_id for earlier, _ in calls[:index] for job_id, _ in earlier),
            not_queued=tuple(job_id for later, _ in calls[index + 1 :] for job_id, _ in later),
            wanted=wanted,
            acknowledged=acknowledged,
        )

    def _origin_of(self, job: Job) -> str:
        """Where ``job`` is queued (see :func:`keys.origin`), its names checked; for a job
        sent to a worker, the worker's name."""
        queue = None if job.queue == DEFAULT_QUEUE else job.queue
        for name in (job.worker, job.manager, queue):
            if name is not None:
                self._check_cached(name)
        if job.worker is not None:
            return job.worker
        return keys.origin(manager=job.manager, queue=queue)

    def _served(self, queues: Sequence[str]) -> list[str]:
        """The origins of named queues ``queues`` (``"default"``: the shared queue), checked."""
        origins = []
        for queue in queues:
            if queue == DEFAULT_QUEUE:
                origins.append(keys.SHARED_ORIGIN)
            else:
                self._check_cached(queue)
                origins.append(keys.origin(queue=queue))
        return origins

    def _encode_new(self, job: Job) -> codec.Stored:
        """The hash of a job about to be queued (its id must be text: codec.check_new_id)."""
        codec.check_new_id(job.id)
        return codec.encode_job(job, max_size=self._options.max_job_size)

    def encoded(self, job: Job) -> codec.Stored:
        """The hash ``job`` would be stored as, its names and unique key checked as queueing
        checks them (:class:`~qw_redis.cluster.ClusterBroker` checks a whole batch so, before
        it writes any of it to one shard and the rest to others).

        :raises QwError: what queueing ``job`` would raise before writing anything.
        """
        self._origin_of(job)
        unique = unique_of(job)
        if unique is not None:
            codec.check_new_id(unique.key or "")
        return self._encode_new(job)

    # -- consuming ---------------------------------------------------------------------------

    @_translated
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
        self._check_cached(manager)
        self._check_cached(worker)
        served = self._served(queues)
        limit = max(0, min(limit, self.capabilities.max_take))
        deadline = time.monotonic() + timeout
        waits = limit > 0 and timeout >= _MIN_BLOCK
        take = functools.partial(self._take_once, manager, worker, served=served)
        jobs = take(finished, held, limit, waits=waits, keep_finished=check_ttl(keep_finished))
        if jobs or not waits:
            return jobs
        nudge, handoff = self._keys.nudge(worker), self._keys.handoff(worker)
        wake_keys = [
            nudge,
            handoff,
            self._keys.wake(worker),
            self._keys.wake(manager),
            *map(self._keys.wake, served),
        ]
        while True:
            remaining = deadline - time.monotonic()
            # Idle anyway: move due delayed jobs, and wake up when the next one is due.
            _, due_in = self._scripts.promote()
            if due_in is not None and due_in <= min(self._timer_tick(), remaining):
                # Redis ends a blocking wait only on its timer's tick (1/hz: 100 ms by
                # default), so a job due sooner is waited for here, to the millisecond, in
                # steps: a job queued meanwhile (due sooner still, or now) is seen within one.
                time.sleep(min(due_in, DUE_STEP))
            else:
                wait = min(self._slice, remaining)
                if due_in is not None:  # wake a tick early; the rest is waited here
                    wait = min(wait, due_in - self._timer_tick())
                if wait >= _MIN_BLOCK:
                    woken = self._client.blpop(wake_keys, timeout=wait)
                    if woken is not None and woken[0] == handoff:  # a job, handed to us
                        job = self._handed_off(cast("str", woken[1]), manager, worker)
                        if job is not None:
                            return [job]
                    elif woken is not None and woken[0] == nudge:  # see nudge(): return now
                        return take((), held, limit)
            if self._follow_at is not None:  # an idle worker too leaves a demoted primary
                self._follow_primary(quiet=False)
            # Registered as waiting only if it waits again: a take never returns with the
            # worker registered, so no job is handed to a worker that is not waiting.
            waits = deadline - time.monotonic() >= _MIN_BLOCK
            jobs = take((), held, limit, waits=waits)
            if jobs or not waits:
                return jobs

    @_translated
    def nudge(self, worker: str) -> None:
        """See :meth:`Broker.nudge`: one token on ``qw:nudge:<w>`` (never more), which
        expires after :data:`NUDGE_TTL_MS` if nobody waits."""
        self._check_cached(worker)
        pipe = self._client.pipeline(transaction=True)
        pipe.lpush(self._keys.nudge(worker), "1")
        pipe.ltrim(self._keys.nudge(worker), 0, 0)
        pipe.pexpire(self._keys.nudge(worker), NUDGE_TTL_MS)
        pipe.execute()

    def _timer_tick(self) -> float:
        """Seconds between two ticks of Redis's timer (``1 / hz``), read once."""
        if self._tick is None:
            hz = self._info_field("server", "hz")
            self._tick = 1 / float(hz) if hz else DEFAULT_TIMER_TICK
        return self._tick

    def _take_once(
        self,
        manager: str,
        worker: str,
        finished: Sequence[str],
        held: Sequence[str],
        limit: int,
        *,
        waits: bool = False,
        served: Sequence[str] = (keys.SHARED_ORIGIN,),
        keep_finished: float = 0.0,
    ) -> list[Job]:
        """One ``take.lua`` call; ``waits``: if it finds nothing, the worker waits next;
        ``served``: the origins of the queues served after the manager's;
        ``keep_finished``: see :meth:`Broker.take`."""
        reply = self._scripts.take(
            manager=manager,
            worker=worker,
            finished=finished,
            held=held,
            limit=limit,
            max_size=self._options.max_job_size,
            wait_ms=self._idling_ms if waits else 0,
            origins=served,
            keep_finished=keep_finished,
        )
        if reply.broken:
            self._report_broken(reply.broken)
        jobs = []
        for item in reply.taken:
            job = self._decode_taken(item, manager, worker)
            if job is not None:
                jobs.append(job)
        return jobs

    def _handed_off(self, packed: str, manager: str, worker: str) -> Job | None:
        """The job of a hand-off entry (see ``queue.lua``); ``None`` if it was unreadable
        (moved to the failed registry), or the entry itself was: its job is then a
        leftover on the worker's list, which the next take hands out."""
        try:
            taken = handed_off(packed)
        except ValueError as exc:
            log.warning("a job handed to %s could not be read (%s); its next take has it", worker, exc)
            return None
        return self._decode_taken(taken, manager, worker)

    def _report_broken(self, broken: Mapping[str, str]) -> None:
        """Log, once a minute per key, a queue that cannot be served for its type."""
        now = time.monotonic()
        for key, kind in broken.items():
            if now - self._broken_reported.get(key, -float("inf")) >= BROKEN_REPORT_EVERY:
                self._broken_reported[key] = now
                log.error(
                    "%s is a %s, not a list: qw cannot take jobs from it and serves the other "
                    "queues (another program uses this key? rename it, or delete it if it is stray)",
                    codec.shown(key),
                    kind,
                )

    def _decode_taken(self, item: Taken, manager: str, worker: str) -> Job | None:
        """The taken job, or ``None`` after moving an unreadable one to the failed registry."""
        # Where a hash without qw's marker came from (qw's own hashes say it themselves).
        from_manager = manager if item.source == "m" else None
        from_worker = worker if item.source == "w" else None
        from_queue = keys.named_queue(item.source)
        error: InvalidJob
        if item.wrong_type:
            error = InvalidJob(f"job:{codec.shown(item.id)} is a {item.wrong_type}, not a hash")
        elif item.marker_type:
            error = InvalidJob(f"qw:job:{codec.shown(item.id)} is a {item.marker_type}, not a string")
        elif item.fields is None:
            limit = self._options.max_job_size
            error = JobTooLarge(f"job {codec.shown(item.id)} is {item.size} bytes; the limit is {limit}")
        else:
            try:
                job = codec.decode_job(
                    item.id,
                    item.fields,
                    item.marker,
                    manager=from_manager,
                    worker=from_worker,
                    queue=from_queue,
                )
                return attrs.evolve(job, suspect=True) if item.suspect else job
            except InvalidJob as exc:
                error = exc
        log.warning("job %s is unreadable, moved to the failed jobs: %s", codec.shown(item.id), error)
        job = Job(id=item.id, data=None, manager=from_manager, worker=from_worker, queue=from_queue)
        failure = Failure.from_exception(error, worker=worker, kind="invalid")
        self._fail(worker, job, failure, keep_hash=True)
        return None

    @_translated
    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        return self._scripts.finish(worker=worker, job_ids=job_ids, keep_finished=check_ttl(keep_finished))

    @_translated
    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        """See :meth:`Broker.finish_with_result`: ``finish_result.lua``; kept ``ttl`` seconds,
        at least a millisecond."""
        ttl_ms = max(1, round(1000 * check_ttl(ttl)))
        return self._scripts.finish_result(worker=worker, job_id=job_id, value=result, ttl_ms=ttl_ms)

    @_translated
    def job_status(self, job_id: str) -> JobState:
        """See :meth:`Broker.job_status`: one pipeline of reads, and for a held job one
        more (``LPOS`` on each registered worker's list)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.zscore(self._keys.FAILED, job_id)
        pipe.hgetall(self._keys.job(job_id))
        pipe.get(self._keys.job_marker(job_id))
        pipe.hget(self._keys.ORIGIN, job_id)
        pipe.zscore(self._keys.FINISHED, job_id)
        failed_at, fields, marker, origin, finished_at = pipe.execute(raise_on_error=False)
        if failed_at is not None and not isinstance(failed_at, Exception):
            entry = self.get_failed(job_id)
            if entry is not None:
                return JobState(
                    job_id=job_id,
                    state=State.FAILED,
                    job=entry.job,
                    queue=queue_label(entry.job),
                    worker=entry.failure.worker,
                    failure=entry.failure,
                )
        if (fields and not isinstance(fields, Exception)) or isinstance(marker, str):
            return self._stored_state(job_id, fields, marker, origin)
        found = self.get_result(job_id)
        if found is not None:
            return JobState(
                job_id=job_id,
                state=State.SUCCEEDED,
                worker=found.worker,
                result=found,
                finished_at=found.finished_at,
            )
        if isinstance(finished_at, float):
            return JobState(job_id=job_id, state=State.SUCCEEDED, finished_at=finished_at)
        return JobState(job_id=job_id, state=State.UNKNOWN)

    def _stored_state(self, job_id: str, fields: Any, marker: Any, origin: Any) -> JobState:
        """Where a stored (queued, delayed or held) job is."""
        try:
            job: Job | None = codec.decode_job(
                job_id,
                fields if isinstance(fields, dict) else {},
                marker if isinstance(marker, str) else None,
            )
        except InvalidJob:
            job = None  # unreadable: its next take moves it to the failed registry
        label = None if job is None else queue_label(job)
        if isinstance(origin, str):
            holder = self._holder(job_id)
            since = None if holder is None else self._client.hget(self._keys.running(holder), job_id)
            return JobState(
                job_id=job_id,
                state=State.HELD,
                job=job,
                queue=label,
                worker=holder,
                since=None if since is None else float(since),
            )
        if job is not None and job.worker is None:
            due = self._client.zscore(self._keys.delayed(self._origin_of(job)), job_id)
            if due is not None:
                return JobState(job_id=job_id, state=State.DELAYED, job=job, queue=label, due_at=float(due))
        return JobState(job_id=job_id, state=State.QUEUED, job=job, queue=label)

    def _holder(self, job_id: str) -> str | None:
        """The registered worker whose list holds ``job_id`` (``None``: none registered does)."""
        workers = [worker for manager in self.managers() for worker in self.workers(manager)]
        pipe = self._client.pipeline(transaction=False)
        for worker in workers:
            pipe.lpos(self._keys.queue(worker), job_id)
        found = pipe.execute(raise_on_error=False)
        return next((w for w, at in zip(workers, found, strict=True) if isinstance(at, int)), None)

    @_translated
    def get_result(self, job_id: str) -> JobResult | None:
        """See :meth:`Broker.get_result`: ``HGETALL qw:result:<id>``."""
        try:
            fields = cast("dict[str, str]", self._client.hgetall(self._keys.result(job_id)))
        except redis.ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):  # not qw's: no result
                return None
            raise
        if not fields:
            return None
        try:
            return JobResult(
                job_id=job_id,
                value=decode_value(fields["value"]),
                finished_at=float(fields["finished_at"]),
                worker=fields["worker"],
            )
        except (KeyError, ValueError) as exc:
            log.warning("the result of job %s cannot be read: %s", codec.shown(job_id), exc)
            return None

    @_translated
    def wait_result(self, job_id: str, timeout: float) -> JobResult | None:
        """See :meth:`Broker.wait_result`: ``BLPOP qw:done:<id>`` in slices; a waiter that
        gets the token puts it back, so that every waiter wakes."""
        deadline = time.monotonic() + max(0.0, timeout)
        done = self._keys.done(job_id)
        while (found := self.get_result(job_id)) is None:
            remaining = deadline - time.monotonic()
            if remaining < _MIN_BLOCK:
                return None
            if self._client.blpop([done], timeout=min(self._slice, remaining)) is not None:
                left = int(self._client.pttl(self._keys.result(job_id)))
                if left > 0:  # the token again, for the next waiter; it expires with the result
                    pipe = self._client.pipeline(transaction=True)
                    pipe.lpush(done, "1")
                    pipe.pexpire(done, left)
                    pipe.execute()
                return self.get_result(job_id)
        return found

    @_translated
    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        return self.fail_jobs(worker=worker, failures=[(job, failure)], limits=limits)[0]

    @_translated
    def fail_jobs(
        self,
        *,
        worker: str,
        failures: Sequence[tuple[Job, Failure]],
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[bool]:
        """See :meth:`Broker.fail_jobs`: one ``fail.lua`` call per :data:`FAIL_BATCH` jobs."""
        entries = [
            FailedEntry(
                job.id,
                codec.encode_record(
                    attrs.evolve(job, attempts=job.attempts + 1)
                ),  # the run that failed counts
                codec.encode_failure(failure),
                keep_hash=False,
            )
            for job, failure in failures
        ]
        done: list[bool] = []
        for start in range(0, len(entries), FAIL_BATCH):
            done += self._scripts.fail(
                worker=worker,
                jobs=entries[start : start + FAIL_BATCH],
                max_age=limits.max_age,
                max_count=limits.max_count,
            )
        return done

    def _fail(
        self,
        worker: str,
        job: Job,
        failure: Failure,
        *,
        keep_hash: bool,
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> bool:
        entry = FailedEntry(job.id, codec.encode_record(job), codec.encode_failure(failure), keep_hash)
        [done] = self._scripts.fail(
            worker=worker, jobs=[entry], max_age=limits.max_age, max_count=limits.max_count
        )
        return done

    @_translated
    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        again = attrs.evolve(job, attempts=job.attempts + 1)
        stored = codec.encode_job(again, max_size=self._options.max_job_size)
        return self._scripts.retry(worker=worker, job_id=job.id, stored=stored, delay=delay)

    @_translated
    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        return self._scripts.release(worker=worker, job_ids=job_ids)

    @_translated
    def recover_worker(
        self,
        *,
        manager: str,
        worker: str,
        max_recoveries: int | None = None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> int:
        self._check_cached(manager)
        self._check_cached(worker)
        recovered = self._recover(
            manager,
            worker,
            if_dead=False,
            max_recoveries=max_recoveries,
            crashed_job=crashed_job,
            suspects=suspects,
            limits=limits,
        )
        return 0 if recovered is None else recovered.requeued

    def _recover(
        self,
        manager: str,
        worker: str,
        *,
        if_dead: bool,
        max_recoveries: int | None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> Reaped | None:
        """Run ``recover.lua`` until the worker's list is empty; fail the poison jobs it finds.

        :return: what was done, or ``None`` if ``if_dead`` and the worker had a heartbeat
            or had deregistered itself (a warm stop racing the reaper's listing).
        """
        requeued = failed = 0
        first = True
        while True:
            step = self._scripts.recover(
                manager=manager,
                worker=worker,
                if_dead=if_dead,
                max_recoveries=max_recoveries,
                crashed_job=crashed_job,
                suspects=suspects,
            )
            if step.skipped:  # alive (again), or gone: leave it what it still holds
                if first:
                    return None
                break
            first = False
            requeued += step.moved
            for job_id in step.poison:
                failed += self._fail_poison(manager, worker, job_id, max_recoveries, limits)
            if step.left <= len(step.poison):
                break
        return Reaped(manager=manager, worker=worker, requeued=requeued, failed=failed)

    def _fail_poison(
        self, manager: str, worker: str, job_id: str, max_recoveries: int | None, limits: FailedLimits
    ) -> int:
        """Move a job recovered too often from the dead ``worker``'s list to the failed registry."""
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(self._keys.job(job_id))
        pipe.get(self._keys.job_marker(job_id))
        pipe.hget(self._keys.ORIGIN, job_id)
        fields, marker, origin = cast("tuple[dict[str, str], str | None, str | None]", pipe.execute())
        keep_hash = False
        try:
            job = codec.decode_job(job_id, fields, marker, manager=origin or None)
            job = attrs.evolve(job, attempts=job.attempts + 1)  # the run it crashed in counts
        except InvalidJob:  # kept as it is, as an unreadable job is
            job, keep_hash = Job(id=job_id, data=None, manager=origin or None), True
        error = JobCrashed(
            f"worker {worker} died while holding job {job_id}, which had been put back "
            f"{max_recoveries} times already after its worker died"
        )
        failure = Failure.from_exception(error, worker=worker, kind="crashed")
        log.warning("job %s: %s; moved to the failed jobs", job_id, error)
        return int(self._fail(worker, job, failure, keep_hash=keep_hash, limits=limits))

    # -- liveness ----------------------------------------------------------------------------

    @_translated
    def beat(
        self,
        *,
        manager: str,
        token: str,
        workers: Mapping[str, str],
        ttl: float,
        running: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, str | None]:
        """See :meth:`Broker.beat`: ``beat.lua``; then, with ``running``, each worker's
        ``qw:running:<w>`` replaced in one pipeline (what it runs is for people to read:
        it need not be atomic with the heartbeat)."""
        self._check_cached(manager)
        for worker in workers:
            self._check_cached(worker)
        ttl_ms = max(1, round(ttl * 1000))
        changed = self._scripts.beat(manager=manager, token=token, workers=workers, ttl_ms=ttl_ms)
        if running:
            pipe = self._client.pipeline(transaction=False)
            for worker, jobs in running.items():
                self._check_cached(worker)
                pipe.delete(self._keys.running(worker))
                if jobs:
                    pipe.hset(self._keys.running(worker), mapping={j: repr(at) for j, at in jobs.items()})
                    pipe.pexpire(self._keys.running(worker), ttl_ms)
            pipe.execute()
        return {name: previous or None for name, previous in changed.items()}

    @_translated
    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        pipe = self._client.pipeline(transaction=False)
        pipe.get(self._keys.heartbeat(name))
        pipe.pttl(self._keys.heartbeat(name))
        token, left_ms = pipe.execute()
        if token is None or left_ms < 0:
            return None
        return str(token), left_ms / 1000

    @_translated
    def reap(
        self,
        *,
        owner: str,
        lease: float,
        ttl: float,
        max_recoveries: int | None = 3,
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[Reaped] | None:
        """See :meth:`Broker.reap`; the lease is ``SET qw:reaper <owner> NX PX``.

        Skips the round when Redis has been up for less than ``ttl`` seconds (a restart:
        heartbeats written before it may be gone, or lapsed while it was down).
        """
        if lease > 0 and not self._client.set(
            self._keys.REAPER, owner, nx=True, px=max(1, round(lease * 1000))
        ):
            return None
        uptime = self._info_field("server", "uptime_in_seconds")
        if uptime is not None and float(uptime) < ttl:
            return None
        managers = [
            m
            for m in sorted(cast("dict[str, str]", self._client.hgetall(self._keys.MANAGERS)))
            if _valid_name(m)
        ]
        pipe = self._client.pipeline(transaction=False)
        for manager in managers:
            pipe.smembers(self._keys.manager_workers(manager))
            pipe.exists(self._keys.heartbeat(manager))
        found = pipe.execute(raise_on_error=False)
        workers = []
        for manager, members in zip(managers, found[::2], strict=True):
            if isinstance(members, Exception):  # one broken key must not stop every reaper
                log.error("cannot read the workers of manager %s: %s", codec.shown(manager), members)
                continue
            workers += [(manager, worker) for worker in sorted(members)]
        pipe = self._client.pipeline(transaction=False)
        for _, worker in workers:
            pipe.exists(self._keys.heartbeat(worker))
        reaped = []
        for (manager, worker), alive in zip(workers, pipe.execute(), strict=True):
            if not alive and _valid_name(worker):
                done = self._recover(
                    manager, worker, if_dead=True, max_recoveries=max_recoveries, limits=limits
                )
                if done is not None:
                    reaped.append(done)
        for manager, members, alive in zip(managers, found[::2], found[1::2], strict=True):
            if not alive and not isinstance(members, Exception):
                self._scripts.forget_manager(manager)
        self._sweep_markers()
        return reaped

    def _sweep_markers(self) -> None:
        """One step of the sweep that drops markers left by original workers (see
        ``lua/sweep_markers.lua``): :data:`SWEEP_STEP` keys of a SCAN per reaper round, so
        the whole keyspace is covered in time, never in one long command."""
        try:
            self._sweep_cursor, found = self._client.scan(
                self._sweep_cursor, match=self._keys.JOB_MARKER_PATTERN, count=SWEEP_STEP
            )
            swept = self._scripts.sweep_markers([str(key) for key in found])
        except redis.RedisError as exc:  # the next round goes on; nothing depends on it
            log.warning("sweeping the markers of finished jobs failed: %s", exc)
            return
        if swept:
            log.info("dropped the markers of %d job(s) an original qw worker finished", swept)

    def _info_field(self, section: str, field: str) -> Any:
        """One field of ``INFO section``, or ``None`` where INFO is missing (fakeredis)."""
        try:
            return self._client.info(section).get(field)
        except redis.ResponseError:
            return None

    def setup_warnings(self) -> list[str]:
        """Warns when Redis's ``maxmemory-policy`` may evict keys (anything but ``noeviction``)."""
        try:
            policy = self._info_field("memory", "maxmemory_policy")
        except redis.RedisError as exc:
            raise self._error(exc) from exc
        if policy is None or policy == "noeviction":
            return []
        return [
            f"Redis at {self.describe()} has maxmemory-policy {policy}: under memory pressure it "
            "may evict qw's keys (queued and held jobs) and lose them; set maxmemory-policy noeviction"
        ]

    # -- membership --------------------------------------------------------------------------

    @_translated
    def register_manager(self, name: str) -> None:
        self._client.sadd(self._keys.ALL_MANAGERS, self.check_name(name))

    # -- periodic jobs (qw_redis.ticks) ---------------------------------------------------------

    @_translated
    def now(self) -> float:
        """See :meth:`Broker.now`: Redis's ``TIME``."""
        return ticks.server_time(self._client)

    @_translated
    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        """See :meth:`Broker.enqueue_tick`: one ``tick.lua`` call."""
        self._check_cached(manager)
        if job.queue is not None and job.queue != DEFAULT_QUEUE:
            self._check_cached(job.queue)
        return ticks.enqueue_tick(
            self._scripts, schedule_id, tick, job, manager=manager, max_size=self._options.max_job_size
        )

    @_translated
    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        """See :meth:`Broker.declare_schedules`: one ``declare.lua`` call."""
        self._check_cached(manager)
        return ticks.declare(self._scripts, manager=manager, declarations=declarations, ttl=ttl)

    @_translated
    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        """See :meth:`Broker.schedule_declarations`."""
        return ticks.declarations(self._client, self._keys)

    @_translated
    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        """See :meth:`Broker.tick_states`."""
        return ticks.states(self._client, schedule_ids, self._keys)

    @_translated
    def deregister_manager(self, name: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.srem(self._keys.ALL_MANAGERS, name)
        pipe.hdel(self._keys.MANAGERS, name)
        pipe.delete(self._keys.heartbeat(name))
        pipe.execute()

    @_translated
    def register_worker(self, *, manager: str, worker: str) -> None:
        self._client.sadd(self._keys.manager_workers(self.check_name(manager)), self.check_name(worker))

    @_translated
    def deregister_worker(self, *, manager: str, worker: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.srem(self._keys.manager_workers(manager), worker)
        pipe.delete(self._keys.heartbeat(worker), self._keys.idling(worker), self._keys.handoff(worker))
        pipe.execute()

    # -- read-only queries -------------------------------------------------------------------

    @_translated
    def managers(self) -> list[str]:
        return sorted(cast("set[str]", self._client.smembers(self._keys.ALL_MANAGERS)))

    @_translated
    def workers(self, manager: str) -> list[str]:
        return sorted(cast("set[str]", self._client.smembers(self._keys.manager_workers(manager))))

    @_translated
    def queued_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.queued_job_ids`; :data:`READ_CHUNK` ids an ``LRANGE``."""
        check_page(offset, limit)
        # Producers LPUSH and takers pop from the right: the next to run is the last, and
        # position p (from the next to run) is index -(p + 1).
        return self._range(
            self._keys.queue_list(self._listed(manager, queue)), offset, limit, from_right=True
        )

    @_translated
    def queued_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        return self._llen(self._keys.queue_list(self._listed(manager, queue)))

    def _listed(self, manager: str | None, queue: str | None) -> str:
        """The origin of the queue a listing asks for (see :func:`check_listed`)."""
        manager, queue = check_listed(manager, queue)
        for name in (manager, queue):
            if name is not None:
                self._check_cached(name)
        return keys.origin(manager=manager, queue=queue)

    @_translated
    def named_queues(self) -> list[str]:
        """See :meth:`Broker.named_queues`: the named queues in ``qw:queues``."""
        try:
            members = cast("set[str]", self._client.smembers(self._keys.QUEUES))
        except redis.ResponseError as exc:  # not a set: problems() says so
            if str(exc).startswith("WRONGTYPE"):
                return []
            raise
        return sorted(name for member in members if (name := keys.named_queue(member)) is not None)

    @_translated
    def held_count(self, worker: str) -> int:
        return self._llen(self._keys.queue(worker))

    def _llen(self, key: str) -> int:
        """The length of list ``key``; ``0`` if it is not a list (:meth:`problems` says so)."""
        return self._wrong_type_as_empty(self._client.llen, key)

    @staticmethod
    def _wrong_type_as_empty(count: Callable[[str], Any], key: str) -> int:
        """``count(key)``, or ``0`` for a key of another type (:meth:`problems` says so)."""
        try:
            return int(count(key))
        except redis.ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                return 0
            raise

    @_translated
    def stray_queues(self) -> dict[str, int]:
        """See :meth:`Broker.stray_queues`: the names in ``qw:queues`` (jobs queued by the
        original qw's client to a name are not found)."""
        return dict(sorted(self._scripts.stray().items()))

    def move_queued(self, name: str, *, to: str | None = None) -> int:
        """See :meth:`Broker.move_queued`; in calls of :data:`MOVE_BATCH` jobs each, so
        Redis is never held up for long."""
        self._check_cached(name)
        if to is not None:
            self._check_cached(to)
        moved = 0
        while True:
            try:
                batch = self._scripts.move(name=name, to=to, limit=MOVE_BATCH)
            except redis.ResponseError as exc:
                if str(exc).startswith("IN_USE "):
                    raise WorkerRunning(str(exc).removeprefix("IN_USE ")) from exc
                raise self._error(exc) from exc
            except redis.RedisError as exc:
                raise self._error(exc) from exc
            moved += batch
            if batch < MOVE_BATCH:
                return moved

    @_translated
    def problems(self) -> list[str]:
        """Keys of the wrong type: queues and held lists (workers skip a queue that is not
        a list), and qw's own keys (a script that would write one fails, changing nothing)."""
        managers = [m for m in self.managers() if _valid_name(m)]
        expected = {getattr(self._keys, name): kind for name, kind in _OWN_KEY_TYPES}
        expected.update({self._keys.queue(m): "list" for m in [None, *managers]})
        expected.update({self._keys.delayed(m): "zset" for m in [None, *managers]})
        named = [keys.origin(queue=q) for q in self.named_queues() if _valid_name(q)]
        expected.update({self._keys.queue_list(origin): "list" for origin in named})
        expected.update({self._keys.delayed(origin): "zset" for origin in named})
        expected.update({self._keys.manager_workers(m): "set" for m in managers})
        pipe = self._client.pipeline(transaction=False)
        for manager in managers:
            pipe.smembers(self._keys.manager_workers(manager))
        for members in pipe.execute(raise_on_error=False):
            if not isinstance(members, Exception):
                expected.update({self._keys.queue(w): "list" for w in members if _valid_name(w)})
        pipe = self._client.pipeline(transaction=False)
        for key in expected:
            pipe.type(key)
        found = dict(zip(expected, pipe.execute(), strict=True))
        return [
            f"{codec.shown(key)} is a {found[key]}, not a {kind}: "
            + ("no worker takes jobs from it" if kind == "list" else "qw cannot use it")
            + " (another program's key? rename or delete it)"
            for key, kind in expected.items()
            if found[key] not in (kind, "none")
        ]

    @_translated
    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        """Ids on ``<worker>:jobs`` as stored: sent directly (newest first), then held in take order."""
        check_page(offset, limit)
        return self._range(self._keys.queue(worker), offset, limit, from_right=False)

    def _range(self, key: str, offset: int, limit: int | None, *, from_right: bool) -> list[str]:
        """``limit`` ids (``None``: to the end) of list ``key`` from position ``offset`` on,
        counted from its right end (``from_right``) or its left: never one ``LRANGE`` over
        a list of unknown length."""

        def read(position: int, count: int) -> list[str]:
            if from_right:
                chunk = cast("list[str]", self._client.lrange(key, -(position + count), -(position + 1)))
                chunk.reverse()
                return chunk
            return cast("list[str]", self._client.lrange(key, position, position + count - 1))

        return self._read_in_chunks(read, offset, limit)

    @staticmethod
    def _read_in_chunks(read: Callable[[int, int], list[str]], offset: int, limit: int | None) -> list[str]:
        """``limit`` ids (``None``: to the end) from position ``offset`` on, through
        ``read(position, count)`` calls of at most :data:`READ_CHUNK` ids each."""
        found: list[str] = []
        position = offset
        while limit is None or len(found) < limit:
            want = READ_CHUNK if limit is None else min(READ_CHUNK, limit - len(found))
            chunk = read(position, want)
            found += chunk
            if len(chunk) < want:
                break
            position += want
        return found

    @_translated
    def get_job(self, job_id: str) -> Job | None:
        """The job stored as ``job:<id>``, else the one in the failed registry, else ``None``."""
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(self._keys.job(job_id))
        pipe.get(self._keys.job_marker(job_id))
        pipe.hget(self._keys.ORIGIN, job_id)
        pipe.hget(self._keys.failed_job(job_id), "job")
        fields, marker, origin, record = pipe.execute()
        if fields or marker is not None:
            return codec.decode_job(job_id, fields, marker, manager=origin or None)
        return None if record is None else codec.decode_record(record)

    @_translated
    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        """See :meth:`Broker.failed_jobs`; :data:`READ_CHUNK` entries a ``ZREVRANGE`` (and
        a pipeline of their records)."""
        return self._failed_range(0, limit)

    @_translated
    def failed_jobs_page(self, *, offset: int = 0, limit: int = 100) -> list[FailedJob]:
        """See :meth:`Broker.failed_jobs_page`: ``ZREVRANGE`` from ``offset``, as :meth:`failed_jobs`."""
        check_page(offset, limit)
        return self._failed_range(offset, limit)

    def _failed_range(self, offset: int, limit: int) -> list[FailedJob]:
        """The ``limit`` entries of the registry from position ``offset`` on, newest first,
        :data:`READ_CHUNK` a ``ZREVRANGE`` (and a pipeline of their records); an entry whose
        record is gone is left out."""
        failed: list[FailedJob] = []
        start, end = offset, offset + max(0, limit)
        while start < end:
            want = min(READ_CHUNK, end - start)
            scored = cast(
                "list[tuple[str, float]]",
                self._client.zrevrange(self._keys.FAILED, start, start + want - 1, withscores=True),
            )
            pipe = self._client.pipeline(transaction=False)
            for job_id, _ in scored:
                pipe.hmget(self._keys.failed_job(job_id), ["job", "failure"])
            for (_, at), (record, failure) in zip(scored, pipe.execute(), strict=True):
                if record is not None and failure is not None:
                    failed.append(_failed_job(record, failure, at))
            if len(scored) < want:
                break
            start += want
        return failed

    @_translated
    def running_jobs(self, manager: str) -> list[RunningJob]:
        """See :meth:`Broker.running_jobs`: each worker's ``qw:running:<w>`` (one pipeline),
        then the ids' ``qw:origin`` (one ``HMGET``). A record of the wrong type, or a time
        that is not a number, is read as nothing known."""
        self._check_cached(manager)
        workers = sorted(cast("set[str]", self._client.smembers(self._keys.manager_workers(manager))))
        pipe = self._client.pipeline(transaction=False)
        for worker in workers:
            pipe.hgetall(self._keys.running(worker))
        found: list[tuple[str, str, float | None]] = []
        for worker, record in zip(workers, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(record, dict):
                found += [(job_id, worker, _number(at)) for job_id, at in sorted(record.items())]
        if not found:
            return []
        origins = cast(
            "list[str | None]", self._client.hmget(self._keys.ORIGIN, [job_id for job_id, _, _ in found])
        )
        return [
            RunningJob(job_id=job_id, worker=worker, since=since, queue=_origin_label(origin))
            for (job_id, worker, since), origin in zip(found, origins, strict=True)
        ]

    @_translated
    def note_jobs_run(self, *, manager: str, count: int) -> None:
        """See :meth:`Broker.note_jobs_run`: ``note_run.lua`` (``HINCRBY`` on the server's
        minute, ``qw:jobs-run:<minute>``, kept :data:`JOBS_RUN_KEEP` seconds)."""
        super().note_jobs_run(manager=manager, count=count)
        self._check_cached(manager)
        if count:
            self._scripts.note_run(manager=manager, count=count, keep=JOBS_RUN_KEEP)

    @_translated
    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        """See :meth:`Broker.jobs_run`: ``TIME``, then one pipeline of ``HGETALL`` of each
        minute's ``qw:jobs-run:<minute>``; a count that is not a whole number, or a key of
        the wrong type, is read as none."""
        check_minutes(minutes)
        seconds, _ = self._client.time()
        now = int(seconds) - int(seconds) % 60
        wanted = list(range(now - 60 * (minutes - 1), now + 1, 60))
        pipe = self._client.pipeline(transaction=False)
        for minute in wanted:
            pipe.hgetall(self._keys.jobs_run(minute))
        found = []
        for minute, record in zip(wanted, pipe.execute(raise_on_error=False), strict=True):
            counts = record if isinstance(record, dict) else {}
            found.append(JobsRun(minute=minute, counts={m: int(n) for m, n in counts.items() if n.isdigit()}))
        return found

    @_translated
    def delayed_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.delayed_job_ids`: ``qw:delayed:<m>`` by due time, :data:`READ_CHUNK`
        ids a ``ZRANGE`` (not yet the jobs qw delayed before 1.0, which a worker's next take
        sorts in there)."""
        check_page(offset, limit)
        key = self._keys.delayed(self._listed(manager, queue))
        return self._read_in_chunks(
            lambda start, count: cast("list[str]", self._client.zrange(key, start, start + count - 1)),
            offset,
            limit,
        )

    @_translated
    def delayed_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        """``ZCARD qw:delayed:<m>``: one command, however many jobs are delayed for any queue."""
        return self._wrong_type_as_empty(self._client.zcard, self._keys.delayed(self._listed(manager, queue)))

    @_translated
    def failed_count(self) -> int:
        return int(self._client.zcard(self._keys.FAILED))

    @_translated
    def job_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """See :meth:`Broker.job_ids_with_prefix`: ``SCAN`` for the markers, the hashes (a
        job queued by the original client has no marker), the failed entries and the
        results whose id starts so, :data:`READ_CHUNK` keys a step; then ``ZSCAN`` for the
        jobs noted as finished lately."""
        found: dict[str, None] = {}
        escaped = _glob_escaped(prefix)
        for key_of in (self._keys.job_marker, self._keys.job, self._keys.failed_job, self._keys.result):
            head = key_of("")
            for key in self._client.scan_iter(match=head + escaped + "*", count=READ_CHUNK):
                found[key[len(head) :]] = None
                if len(found) >= limit:
                    return list(found)
        if self._client.type(self._keys.FINISHED) == "zset":
            for job_id, _ in self._client.zscan_iter(
                self._keys.FINISHED, match=escaped + "*", count=READ_CHUNK
            ):
                found[job_id] = None
                if len(found) >= limit:
                    break
        return list(found)

    @_translated
    def failed_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """See :meth:`Broker.failed_ids_with_prefix`: ``ZSCAN qw:failed MATCH <prefix>*``,
        :data:`READ_CHUNK` entries a step."""
        pattern = _glob_escaped(prefix) + "*"
        found: list[str] = []
        for job_id, _ in self._client.zscan_iter(self._keys.FAILED, match=pattern, count=READ_CHUNK):
            if len(found) >= limit:
                break
            found.append(job_id)
        return found

    @_translated
    def get_failed(self, job_id: str) -> FailedJob | None:
        pipe = self._client.pipeline(transaction=False)
        pipe.hmget(self._keys.failed_job(job_id), ["job", "failure"])
        pipe.zscore(self._keys.FAILED, job_id)
        (record, failure), at = pipe.execute()
        if record is None or failure is None:
            return None
        return _failed_job(record, failure, at)

    @_translated
    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        if job_ids is None:
            return self.purge_all_failed()
        return sum(
            self._scripts.purge_failed(job_ids[start : start + PURGE_BATCH])
            for start in range(0, len(job_ids), PURGE_BATCH)
        )

    @_translated
    def purge_all_failed(self, *, progress: Callable[[int], None] | None = None) -> int:
        """See :meth:`Broker.purge_all_failed`: ``purge_failed_upto.lua`` deletes the oldest
        :data:`PURGE_BATCH` entries at a time, up to the newest failure there was when
        this began, until none is left; no id crosses the network."""
        newest = self._newest_failure()
        purged = 0
        while newest is not None:
            batch = self._scripts.purge_failed_upto(upto=newest, limit=PURGE_BATCH)
            purged += batch
            if progress is not None:
                progress(batch)
            if batch < PURGE_BATCH:
                break
        return purged

    def _newest_failure(self) -> float | None:
        """The score (failure time) of the newest entry of ``qw:failed``; ``None`` if it is empty.

        A run over the registry stops there: a job that fails after it began (a job it
        requeued, say) is stamped later by the server's clock, so the run leaves it alone.
        """
        newest = cast(
            "list[tuple[str, float]]", self._client.zrange(self._keys.FAILED, -1, -1, withscores=True)
        )
        return newest[0][1] if newest else None

    @_translated
    def requeue_all_failed(self, *, progress: Callable[[Sequence[str]], None] | None = None) -> int:
        """See :meth:`Broker.requeue_all_failed`.

        A job's record has to be stored anew as a job (attempts reset), and only
        :mod:`qw_redis.codec` can do that faithfully (Lua's cjson would lose big integers,
        the order of the data's keys and the difference between ``[]`` and ``{}``): so the
        client reads :data:`REQUEUE_BATCH` records at a time, oldest first, walking
        ``qw:failed`` by (score, id) up to the newest failure there was when it began, and
        ``requeue_failed_batch.lua`` requeues those that are still the failures read (same
        score). A job passed over stays behind the walk and is not tried again; one that
        failed again meanwhile has a later score and is left alone.
        """
        newest = self._newest_failure()
        requeued = 0
        after: tuple[float, str] | None = None
        while newest is not None:
            page = self._failed_page(after, newest, REQUEUE_BATCH)
            if not page:
                break
            after = page[-1][1], page[-1][0]
            done: list[str] = []
            for batch in _by_size(self._stored_anew(page), REQUEUE_BYTES):
                done += self._scripts.requeue_failed_batch(batch)
            requeued += len(done)
            if progress is not None:
                progress(done)
        return requeued

    def _failed_page(
        self, after: tuple[float, str] | None, upto: float, size: int
    ) -> list[tuple[str, float]]:
        """Up to ``size`` entries (id, score) of ``qw:failed`` that sort after ``after``
        (score, id), by score then id as Redis sorts them, with a score up to ``upto``."""
        if after is None:
            return cast(
                "list[tuple[str, float]]",
                self._client.zrangebyscore(
                    self._keys.FAILED, "-inf", repr(upto), start=0, num=size, withscores=True
                ),
            )
        score, last = after[0], _raw(after[1])
        skip = 0
        while True:  # entries with the same score as the last one read may sort before it
            chunk = cast(
                "list[tuple[str, float]]",
                self._client.zrangebyscore(
                    self._keys.FAILED, repr(score), repr(upto), start=skip, num=size, withscores=True
                ),
            )
            fresh = [(job_id, at) for job_id, at in chunk if at > score or _raw(job_id) > last]
            if fresh or len(chunk) < size:
                return fresh
            skip += size

    def _stored_anew(
        self, page: Sequence[tuple[str, float]]
    ) -> list[tuple[str, float, codec.Stored, Unique | None]]:
        """The failed jobs of ``page`` (id, score) stored anew as jobs with attempts reset,
        from their records; one whose record is gone or unreadable is left out (it stays
        in the registry, where ``qw failed show`` finds it)."""
        pipe = self._client.pipeline(transaction=False)
        for job_id, _ in page:
            pipe.hget(self._keys.failed_job(job_id), "job")
        batch = []
        for (job_id, score), record in zip(page, pipe.execute(raise_on_error=False), strict=True):
            if not isinstance(record, str):  # purged meanwhile, or not a hash
                continue
            try:
                job = attrs.evolve(codec.decode_record(record), attempts=0)
                batch.append((job_id, score, codec.encode_job(job, max_size=0), unique_of(job)))
            except (ValueError, TypeError, KeyError, InvalidJob) as exc:
                log.warning(
                    "failed job %s cannot be requeued, its record is unreadable: %s", codec.shown(job_id), exc
                )
        return batch

    @_translated
    def requeue_failed(self, job_id: str) -> bool:
        record = cast("str | None", self._client.hget(self._keys.failed_job(job_id), "job"))
        if record is None:
            return False
        job = attrs.evolve(codec.decode_record(record), attempts=0)
        stored = codec.encode_job(job, max_size=0)
        return self._scripts.requeue_failed(job_id=job_id, stored=stored, unique=unique_of(job))

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str | None = None, options: RedisOptions | None = None) -> Broker:
        """Open the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``), or the
        primary that Sentinel manages (``redis+sentinel://``, ``rediss+sentinel://``: see
        :mod:`qw_redis.sentinel`), or a Redis Cluster (``redis+cluster://``,
        ``rediss+cluster://``: a :class:`~qw_redis.cluster.ClusterBroker`, see
        :mod:`qw_redis.cluster`).

        Default ``redis://localhost:6379/0``. A user and password go in the URL
        (``redis://user:password@host:6379/0``, Redis 6 ACLs); the database is the path.
        ``?max_job_size=BYTES``, ``?wait_replicas=N`` and ``?wait_timeout=SECONDS`` are
        :class:`RedisOptions`; other query parameters are redis-py's (``?ssl_ca_certs=...``).

        :raises ConfigurationError: the URL is malformed (the message hides passwords).
        :raises BrokerUnavailable: Redis does not answer, or refuses the login.
        """
        if connection.is_cluster_url(url):
            from qw_redis.cluster import ClusterBroker  # noqa: PLC0415 - it builds on this module

            # Every qw verb opens the "redis" backend with the URL it is given; a cluster's
            # broker spreads the same interface over one of these per shard.
            return ClusterBroker.from_url(url, options)
        return cls._open(url or DEFAULT_URL, options or RedisOptions(), ())

    @classmethod
    def _open(
        cls,
        url: str,
        options: RedisOptions,
        extra: tuple[tuple[str, Any], ...],
        *,
        schema: keys.KeySchema = keys.SINGLE_NODE,
    ) -> RedisBroker:
        redis_url, options = connection.qw_settings(url, options)
        client = connection.open_client(redis_url, options, **dict(extra))
        secrets = [*connection.client_secrets(client), *connection.url_secrets(url)]
        connection.ping(client, connection.redact_url(redis_url), secrets)
        broker = cls(client, options, url=url, schema=schema)
        broker._owns_client = True
        return broker

    def factory(self) -> BrokerFactory:
        from qw_redis import factories  # noqa: PLC0415 - factories open brokers: a cycle

        if self._url is not None:
            return factories.RedisBrokerFactory(url=self._url, options=self._options)
        return factories.factory_for(self._client, self._options)

    def _follow_primary(self, *, quiet: bool) -> None:
        """At most every :data:`FOLLOW_EVERY` seconds, ask the Sentinels where the primary
        is, and drop the connections to an old one (:func:`qw_redis.sentinel.look`).

        A primary that dies costs its clients their connections, and redis-py asks the
        Sentinels where the new one is as it reconnects. One that is demoted but lives on
        takes writes until it is reconfigured, and loses them then. So while the Sentinels
        say a failover is under way (they picked a replica to promote and have not
        announced it yet), every call fails as an outage, and once they name a new primary
        the connections to the old one are dropped: writes to a demoted primary are
        bounded by :data:`FOLLOW_EVERY` (plus a call in flight). A move is reported as an
        outage too (unless ``quiet``: queueing), so that every caller waits it out as it
        does a lost connection, and a manager's reaper gives every heartbeat a full TTL on
        the new primary before it judges anyone dead.

        :raises BrokerUnavailable: a failover is under way, or the primary moved (the next
            call goes to the new one).
        """
        now = time.monotonic()
        if self._follow_at is None or now < self._follow_at:
            return
        self._follow_at = now + FOLLOW_EVERY
        pool = cast("redis.sentinel.SentinelConnectionPool", self._client.connection_pool)
        seen = sentinel.look(pool)
        if seen == sentinel.FAILING_OVER:
            self._follow_at = now  # look again at the next call
            raise BrokerUnavailable(f"Redis at {self.describe()}: the Sentinels are failing its primary over")
        if not isinstance(seen, tuple):
            return
        old, new = (f"{host}:{port}" for host, port in seen)
        log.warning("the primary of %s moved from %s to %s (a failover)", self.describe(), old, new)
        if not quiet:
            raise BrokerUnavailable(
                f"Redis at {self.describe()}: the primary moved from {old} to {new} (a failover); try again"
            )

    def check_name(self, name: str) -> str:
        return keys.check_name(name)

    def _check_cached(self, name: str) -> None:
        if name not in self._names:
            self._names.add(keys.check_name(name))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def describe(self) -> str:
        if self._fake:
            return f"fakeredis (in-process) db {self._client.connection_pool.connection_kwargs.get('db', 0)}"
        if self._url is not None:
            return connection.redact_url(self._url)
        return connection.client_url(self._client)

    def _error(self, exc: redis.RedisError) -> QwError:
        """The qw error for a redis error raised while talking to this broker's Redis."""
        return connection.translate(exc, self.describe(), connection.client_secrets(self._client))
