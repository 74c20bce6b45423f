"""Redis Cluster: qw's keyspace split into shards, each one complete keyspace under one hash tag.

What the peers do, and what qw does:

* BullMQ puts every key of a queue under one hash tag (``{queue}``), so each Lua script
  touches one slot; a queue lives on one node, and a busy one is split by hand into
  several queues ("groups" in the Pro version). qw does the same per shard.
* Sidekiq never spreads one queue over several servers either: "sharding" is a separate
  Redis per set of queues, chosen by the producer. qw's shards are chosen by qw.

Here a queue is spread over ``shards`` shards. Shard ``i`` is the original key schema with
a hash tag before every key (:class:`qw_redis.keys.KeySchema`), so the scripts run
unchanged, each on one slot, and the single-node schema stays byte for byte what it was.
A :class:`RedisBroker` per shard talks to the primary that owns its tag's slot (a plain
client per node: the scripts need nothing of redis-py's cluster client, and a shard moves
as one slot). :class:`ClusterBroker` routes:

* Producers: a job with a unique key goes to the shard of its key (so that the key is
  held in one place); a job sent to a worker to the worker's home shard; any other job to
  the shard of its id (``crc32(id) % shards``), which spreads jobs evenly and lets a lookup
  by id (``qw job``, results) go to the right shard first. Order is kept within a shard,
  not across shards.
* Workers: each has a home shard (its pid modulo ``shards``, so a manager's workers spread
  evenly). A take finishes and takes on the home shard first, in one round trip as on a
  single node; only when the home shard has nothing does it look at the others. A job
  taken from another shard is finished there (its shard is remembered per job).
* Waiting: a worker blocks on its home shard only (one connection can wait on one node),
  for at most :data:`CROSS_SHARD_POLL` seconds at a time, then looks at the other shards
  again. A job queued on a shard where some worker is waiting wakes that worker at once
  (its home); a job queued on a shard where no worker is homed waits at most that long.
  With at least as many workers as shards, every shard has waiting workers. (Pushing
  wake-up tokens to other shards from producers would cost every queueing call a round
  trip per shard, on the hot path, to save idle workers a fraction of a second.)
* Membership, heartbeats, schedule declarations: written to every shard (a few writes
  per heartbeat interval), so each shard is a complete keyspace whose reaper, run by any
  manager, recovers the lists its dead workers left on that shard.
* Listings and counts add up the shards; lookups by id ask the likely shard first.

``shards`` is part of the data layout: every producer and worker must use the same number
(the tags depend on it). Shard ``i`` of ``n`` is tagged ``{qw<n>.<i>.<k>}`` with the
smallest ``k`` whose slot lies in the ``i``-th of ``n`` equal ranges of the 16384 slots,
so that on a cluster whose primaries own equal ranges (``redis-cli --cluster create``)
the shards land on different primaries.
"""

from __future__ import annotations

import functools
import logging
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import attrs
import redis
from redis.crc import key_slot

from qw_core.broker import Broker, BrokerFactory, Reaped, check_delay, check_page
from qw_core.errors import BrokerUnavailable, ConfigurationError, JobsNotReplicated, QwError
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
)
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.results import JobResult
from qw_core.unique import Queued, unique_of
from qw_redis import connection, keys
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions

log = logging.getLogger(__name__)

SCHEMES = connection.CLUSTER_SCHEMES
EXAMPLE = "redis+cluster://host1:7000,host2:7001/?shards=3"
SLOTS = 16384
#: Longest single wait of a worker on its home shard before it looks at the other shards.
CROSS_SHARD_POLL = 0.5
#: Most shards a URL may ask for.
MAX_SHARDS = 64
#: Seconds a reaper waits for the heartbeat of a worker it reaped on some shards to lapse on
#: the others (one beat writes them a few milliseconds apart; a loaded host, more).
REAP_SPREAD = 0.5
#: Most taken jobs whose shard a broker remembers (a worker holds far fewer; the rest were
#: settled by others, e.g. recovered after a pause).
MAX_REMEMBERED = 100_000

_T = TypeVar("_T")


@attrs.frozen
class ClusterURL:
    """A parsed cluster URL: the seed nodes, the number of shards, and what each node's
    URL carries besides its address (scheme, login, redis-py settings)."""

    seeds: tuple[tuple[str, int], ...]
    shards: int
    scheme: str
    login: str  # "user:password@" or ""
    query: str  # redis-py settings and qw's own (max_job_size...), for every node

    def node_url(self, host: str, port: int) -> str:
        return f"{self.scheme}://{self.login}{host}:{port}/0" + (f"?{self.query}" if self.query else "")


def parse(url: str) -> ClusterURL:
    """Read ``redis+cluster://[user:password@]host:port[,host:port...][/0][?shards=N&...]``.

    :raises ConfigurationError: with what is wrong (the password hidden).
    """
    shown = connection.redact_url(url)
    bad = functools.partial(_bad_url, shown)
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in SCHEMES:
        raise bad(f"the scheme must be redis+cluster:// or rediss+cluster:// ({EXAMPLE})")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    login, at, hosts = netloc.rpartition("@")
    if path not in ("", "0"):
        raise bad("a cluster has database 0 only: leave the path out, or write /0")
    seeds = []
    for part in hosts.split(","):
        host, colon, port = part.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"each node is host:port, comma-separated ({EXAMPLE})")
        seeds.append((host, int(port)))
    shards = 1
    kept = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "shards":
            if not value.isdigit() or not 1 <= int(value) <= MAX_SHARDS:
                raise bad(f"shards must be a whole number from 1 to {MAX_SHARDS}")
            shards = int(value)
        else:
            kept.append((name, value))
    return ClusterURL(tuple(seeds), shards, SCHEMES[scheme.lower()], login + at, urlencode(kept))


def _bad_url(shown: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"invalid Redis Cluster URL {shown}: {why}")


@functools.cache
def shard_tag(index: int, shards: int) -> str:
    """The hash tag of shard ``index`` of ``shards`` (see the module doc)."""
    low, high = index * SLOTS // shards, (index + 1) * SLOTS // shards
    k = 0
    while not low <= key_slot(f"qw{shards}.{index}.{k}".encode()) < high:
        k += 1
    return f"{{qw{shards}.{index}.{k}}}"


def home_shard(worker: str, shards: int) -> int:
    """A worker's home shard: its pid (a worker is named ``<manager>.<pid>``) modulo
    ``shards``, so that a manager's workers spread evenly; crc32 of a name without one."""
    _, dot, pid = worker.rpartition(".")
    number = int(pid) if dot and pid.isdigit() else zlib.crc32(worker.encode("utf-8", "surrogateescape"))
    return number % shards


def id_shard(text: str, shards: int) -> int:
    """The shard of a job id or a unique key: crc32 of its UTF-8 bytes, modulo ``shards``."""
    return zlib.crc32(text.encode("utf-8", "surrogateescape")) % shards


def _primaries(
    seeds: Sequence[tuple[str, int]], node_url: Callable[[str, int], str], options: RedisOptions
) -> list[tuple[int, int, str, int]]:
    """``(first slot, last slot, host, port)`` of every primary, asked of the first seed
    that answers (``CLUSTER SLOTS``).

    :raises BrokerUnavailable: no seed answers.
    """
    errors = []
    for host, port in seeds:
        client = connection.open_client(node_url(host, port), options)
        try:
            reply = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            errors.append(f"{host}:{port}: {exc}")
            continue
        finally:
            client.close()
        ranges = []
        for entry in reply:
            first, last, primary = int(entry[0]), int(entry[1]), entry[2]
            # An empty host means "the address you reached me at" (cluster-preferred-endpoint-type).
            ranges.append((first, last, str(primary[0]) or host, int(primary[1])))
        if ranges:
            return ranges
        errors.append(f"{host}:{port}: no slots are assigned (is the cluster created?)")
    raise BrokerUnavailable("no Redis Cluster node answered: " + "; ".join(errors))


class ClusterBroker(Broker):
    """A :class:`~qw_core.broker.Broker` on a Redis Cluster, its jobs spread over
    ``shards`` shards (see the module doc). Open one with :meth:`from_url`."""

    capabilities = RedisBroker.capabilities

    def __init__(self, url: str, options: RedisOptions | None = None) -> None:
        self._url = url
        base, self._options = connection.qw_settings(url, options or RedisOptions())
        self._parsed = parse(base)
        self._n = self._parsed.shards
        self._schemas = [keys.KeySchema(shard_tag(i, self._n)) for i in range(self._n)]
        self._nodes: dict[tuple[str, int, int], RedisBroker] = {}  # (host, port, shard) -> its broker
        self._shards: list[RedisBroker] = []
        self._where: dict[str, int] = {}  # id of a job this broker took -> its shard
        self._locate()

    # -- topology ------------------------------------------------------------------------

    def _locate(self) -> None:
        """Point every shard at the primary that owns its tag's slot now (a shard whose
        primary did not change keeps its connection)."""
        ranges = _primaries(self._parsed.seeds, self._parsed.node_url, self._options)
        shards = []
        for index, schema in enumerate(self._schemas):
            slot = key_slot(schema.prefix.encode())
            owner = next(((h, p) for first, last, h, p in ranges if first <= slot <= last), None)
            if owner is None:
                raise BrokerUnavailable(f"no primary of {self.describe()} owns slot {slot} (shard {index})")
            broker = self._nodes.get((*owner, index))
            if broker is None:
                url = self._parsed.node_url(*owner)
                broker = RedisBroker._open(url, self._options, (), schema=schema)
                log.debug("shard %d of %s (%s) is on %s:%d", index, self.describe(), schema.prefix, *owner)
            shards.append((owner, broker))
        kept = {(*owner, index): broker for index, (owner, broker) in enumerate(shards)}
        for where, broker in self._nodes.items():
            if kept.get(where) is not broker:
                broker.close()
        self._nodes = kept
        self._shards = [broker for _, broker in shards]

    def _on(self, index: int, call: Callable[[RedisBroker], _T]) -> _T:
        """``call(shard)``, following a shard that moved (a failover, a slot migration).

        ``MOVED`` comes before a command runs: the call is made again on the new owner.
        A lost connection, ``ASK``/``TRYAGAIN`` (the slot is being migrated, its keys split
        between two nodes) and ``CLUSTERDOWN`` are :class:`BrokerUnavailable`, which every
        caller waits out; the shard is looked up again first.
        """
        try:
            return call(self._shards[index])
        except (QwError, redis.RedisError) as exc:
            cause = exc if isinstance(exc, redis.RedisError) else exc.__cause__
            if isinstance(cause, redis.exceptions.MovedError):
                self._relocate()
                try:
                    return call(self._shards[index])
                except (QwError, redis.RedisError) as again:
                    if not isinstance(again.__cause__ or again, redis.exceptions.MovedError):
                        raise
                    # The nodes asked do not know of the move yet: wait it out as an outage.
                    raise BrokerUnavailable(
                        f"{self.describe()}: shard {index} is moving; try again"
                    ) from again
            if isinstance(cause, (redis.exceptions.AskError, redis.exceptions.TryAgainError)):
                self._relocate(quiet=True)
                raise BrokerUnavailable(
                    f"{self.describe()}: shard {index}'s slot is being migrated; try again"
                ) from exc
            if isinstance(exc, BrokerUnavailable) or isinstance(
                cause, (redis.exceptions.ClusterDownError, redis.ConnectionError, redis.TimeoutError)
            ):
                self._relocate(quiet=True)
                if isinstance(exc, BrokerUnavailable):
                    raise
                raise BrokerUnavailable(f"{self.describe()}: shard {index} is unreachable: {exc}") from exc
            raise

    def _relocate(self, *, quiet: bool = False) -> None:
        try:
            self._locate()
        except QwError as exc:
            if not quiet:
                raise
            log.warning("could not look up the nodes of %s: %s", self.describe(), exc)

    def _all(self, call: Callable[[RedisBroker], _T]) -> list[_T]:
        """``call`` on every shard, in shard order."""
        return [self._on(index, call) for index in range(self._n)]

    def _everywhere(self, call: Callable[[RedisBroker], _T]) -> list[_T]:
        """``call`` on every shard, each tried even if one before it is unavailable (then
        raised after the rest): a shard failing over must not keep the others' heartbeats
        and memberships from being written, or their reapers would judge live workers dead.
        """
        answers, unavailable = [], None
        for index in range(self._n):
            try:
                answers.append(self._on(index, call))
            except BrokerUnavailable as exc:
                unavailable = unavailable or exc
        if unavailable is not None:
            raise unavailable
        return answers

    def _first(self, order: Sequence[int], call: Callable[[RedisBroker], _T | None]) -> _T | None:
        """The first answer that is not ``None`` of ``call`` on the shards in ``order``."""
        for index in order:
            found = self._on(index, call)
            if found is not None:
                return found
        return None

    def _paged(
        self, read: Callable[[RedisBroker, int | None], list[str]], offset: int, limit: int | None
    ) -> list[str]:
        """A page of a listing across the shards: each shard's first ``offset + limit``
        ids, shard after shard, then the page of those (order holds within a shard)."""
        check_page(offset, limit)
        want = None if limit is None else offset + limit
        found = [i for ids in self._all(lambda s: read(s, want)) for i in ids]
        return found[offset:want]

    def _likely(self, job_id: str) -> list[int]:
        """Every shard, the one most likely to hold ``job_id`` first."""
        first = self._where.get(job_id, id_shard(job_id, self._n))
        return [first, *(i for i in range(self._n) if i != first)]

    # -- producing -----------------------------------------------------------------------

    def shard_of(self, job: Job) -> int:
        """The shard ``job`` is queued on (see the module doc)."""
        unique = unique_of(job)
        if unique is not None and unique.key is not None:  # one place holds the key
            return id_shard(unique.key, self._n)
        if job.worker is not None:
            return home_shard(job.worker, self._n)
        return id_shard(job.id, self._n)

    def _by_shard(self, jobs: Sequence[Job]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for position, job in enumerate(jobs):
            groups.setdefault(self.shard_of(job), []).append(position)
        return groups

    def queue_jobs(self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None) -> list[str]:
        done = self.queue_jobs_unique(jobs, delay=delay, at=at)
        return [queued.id for queued in done]

    def queue_jobs_unique(
        self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None
    ) -> list[Queued]:
        done: list[Queued] = [Queued(job.id, True) for job in jobs]
        groups = list(self._by_shard(jobs).items())
        if len(groups) > 1:  # refuse a bad job before any shard is written (each checks its own)
            check_delay(jobs, delay, at)
            for job in jobs:
                self._shards[0].encoded(job)
        for step, (index, positions) in enumerate(groups):
            part = [jobs[p] for p in positions]
            try:
                answers = self._on(
                    index, functools.partial(RedisBroker.queue_jobs_unique, jobs=part, delay=delay, at=at)
                )
            except JobsNotReplicated as exc:  # say which jobs of the whole call got where
                earlier = tuple(jobs[p].id for _, ps in groups[:step] for p in ps)
                later = tuple(jobs[p].id for _, ps in groups[step + 1 :] for p in ps)
                raise JobsNotReplicated(
                    str(exc),
                    job_ids=exc.job_ids,
                    confirmed=earlier + exc.confirmed,
                    not_queued=exc.not_queued + later,
                    wanted=exc.wanted,
                    acknowledged=exc.acknowledged,
                ) from exc
            for position, answer in zip(positions, answers, strict=True):
                done[position] = answer
        return done

    # -- consuming -----------------------------------------------------------------------

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
        keys.check_name(manager)
        keys.check_name(worker)
        home = home_shard(worker, self._n)
        order = [home, *(i for i in range(self._n) if i != home)]
        held_on = self._held_on(worker, held)
        finishing = self._finishing(finished)
        for index, ids in finishing.items():  # jobs of other shards: finished there first
            if index != home:
                self._on(
                    index,
                    functools.partial(
                        RedisBroker.finish_jobs, worker=worker, job_ids=ids, keep_finished=keep_finished
                    ),
                )
        at_home = finishing.get(home, [])
        deadline = time.monotonic() + timeout

        def take_on(index: int, want: int, wait: float = 0.0, done: Sequence[str] = ()) -> list[Job]:
            jobs = self._on(
                index,
                lambda s: s.take(
                    manager=manager,
                    worker=worker,
                    finished=done,
                    held=held_on.get(index, []),
                    limit=want,
                    timeout=wait,
                    queues=queues,
                    keep_finished=keep_finished,
                ),
            )
            if len(self._where) > MAX_REMEMBERED:  # jobs settled elsewhere (recovered, reaped)
                self._where.clear()  # forgotten ones are looked for on every shard
            for job in jobs:
                self._where[job.id] = index
            return jobs

        limit = max(0, min(limit, self.capabilities.max_take))
        jobs = take_on(home, limit, done=at_home)  # the steady state: this one round trip
        while True:
            for index in order[1:]:  # the batch is filled from the other shards
                if len(jobs) >= limit:
                    return jobs
                jobs += take_on(index, limit - len(jobs))
            remaining = deadline - time.monotonic()
            if jobs or limit <= 0 or remaining <= 0:
                return jobs
            # Nothing anywhere: wait on the home shard, and look at the others now and then.
            wait = min(remaining, CROSS_SHARD_POLL) if self._n > 1 else remaining
            started = time.monotonic()
            jobs = take_on(home, limit, wait)
            if jobs or time.monotonic() - started < wait * 0.9:  # a job, or woken early (a nudge)
                return jobs

    def _finishing(self, finished: Sequence[str]) -> dict[int, list[str]]:
        """``finished`` by the shard each was taken from; an id this broker did not take
        is finished on every shard (finishing is guarded: only where it is held)."""
        by: dict[int, list[str]] = {}
        for job_id in finished:
            index = self._where.pop(job_id, None)
            for shard in range(self._n) if index is None else [index]:
                by.setdefault(shard, []).append(job_id)
        return by

    def _held_on(self, worker: str, held: Sequence[str]) -> dict[int, list[str]]:
        """``held`` by shard; an id this broker did not take is looked for on each shard."""
        by: dict[int, list[str]] = {}
        for job_id in held:
            index = self._where.get(job_id)
            if index is None:
                index = self._held_shard(worker, job_id)
                if index is None:
                    continue  # held nowhere: recovered meanwhile, nothing to protect
                self._where[job_id] = index
            by.setdefault(index, []).append(job_id)
        return by

    def _held_shard(self, worker: str, job_id: str) -> int | None:
        for index in self._likely(job_id):
            if self._on(index, lambda s: s.still_held(worker=worker, job_ids=[job_id]))[0]:
                return index
        return None

    def _shard_holding(self, worker: str, job_id: str) -> int:
        """The shard where ``worker`` holds ``job_id`` (its likely one if none: the call
        there then says it is not held)."""
        index = self._where.get(job_id)
        if index is None:
            index = self._held_shard(worker, job_id)
        return self._likely(job_id)[0] if index is None else index

    def nudge(self, worker: str) -> None:
        self._on(home_shard(keys.check_name(worker), self._n), lambda s: s.nudge(worker))

    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        held = dict.fromkeys(job_ids, False)
        for index, ids in self._finishing(job_ids).items():
            flags = self._on(
                index,
                functools.partial(
                    RedisBroker.finish_jobs, worker=worker, job_ids=ids, keep_finished=keep_finished
                ),
            )
            for job_id, flag in zip(ids, flags, strict=True):
                held[job_id] = held[job_id] or flag
        return [held[job_id] for job_id in job_ids]

    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        index = self._shard_holding(worker, job_id)
        self._where.pop(job_id, None)
        return self._on(
            index, lambda s: s.finish_with_result(worker=worker, job_id=job_id, result=result, ttl=ttl)
        )

    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        index = self._shard_holding(worker, job.id)
        self._where.pop(job.id, None)
        return self._on(index, lambda s: s.fail_job(worker=worker, job=job, failure=failure, limits=limits))

    def fail_jobs(
        self,
        *,
        worker: str,
        failures: Sequence[tuple[Job, Failure]],
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[bool]:
        by: dict[int, list[int]] = {}
        for position, (job, _) in enumerate(failures):
            by.setdefault(self._shard_holding(worker, job.id), []).append(position)
            self._where.pop(job.id, None)
        done = [False] * len(failures)
        for index, positions in by.items():
            part = [failures[p] for p in positions]
            flags = self._on(
                index, functools.partial(RedisBroker.fail_jobs, worker=worker, failures=part, limits=limits)
            )
            for position, flag in zip(positions, flags, strict=True):
                done[position] = flag
        return done

    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        index = self._shard_holding(worker, job.id)
        self._where.pop(job.id, None)
        return self._on(index, lambda s: s.retry_job(worker=worker, job=job, delay=delay))

    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        by: dict[int, list[str]] = {}
        for job_id in job_ids:
            by.setdefault(self._shard_holding(worker, job_id), []).append(job_id)
            self._where.pop(job_id, None)
        return sum(
            self._on(i, functools.partial(RedisBroker.release_jobs, worker=worker, job_ids=ids))
            for i, ids in by.items()
        )

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
        recover = functools.partial(
            RedisBroker.recover_worker,
            manager=manager,
            worker=worker,
            max_recoveries=max_recoveries,
            crashed_job=crashed_job,
            suspects=suspects,
            limits=limits,
        )
        return sum(self._all(recover))

    # -- liveness --------------------------------------------------------------------------

    def beat(
        self,
        *,
        manager: str,
        token: str,
        workers: Mapping[str, str],
        ttl: float,
        running: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, str | None]:
        changed: dict[str, str | None] = {}
        for answer in self._everywhere(
            lambda s: s.beat(manager=manager, token=token, workers=workers, ttl=ttl, running=running)
        ):
            for name, previous in answer.items():
                changed.setdefault(name, previous)
        return changed

    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        return self._first(range(self._n), lambda s: s.heartbeat_of(name))

    def reap(
        self,
        *,
        owner: str,
        lease: float,
        ttl: float,
        max_recoveries: int | None = 3,
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[Reaped] | None:
        """Each shard reaps its part of every worker (its held list there, its registration
        there). One beat writes a worker's heartbeat on every shard, a few milliseconds
        apart, so they lapse as far apart: a worker reaped on some shards is reaped on the
        others as soon as its heartbeat there lapses too, for up to :data:`REAP_SPREAD`
        seconds (one still beating there after that is alive, and left alone). A shard
        that cannot be reaped now (failing over, say) is left for a later round: what the
        others reaped is reported all the same, and only if every shard failed is the
        first error raised."""

        def reap_on(shard: RedisBroker, lease: float) -> list[Reaped] | None:
            return shard.reap(owner=owner, lease=lease, ttl=ttl, max_recoveries=max_recoveries, limits=limits)

        answers: list[list[Reaped] | None] = []
        failed: list[Exception] = []
        for index in range(self._n):
            try:
                answers.append(self._on(index, lambda s: reap_on(s, lease)))
            except Exception as exc:  # the other shards' reports must not be lost with it
                log.warning("reaping on shard %d failed; its part is reaped in a later round: %s", index, exc)
                failed.append(exc)
                answers.append(None)
        if all(answer is None for answer in answers):
            if failed:
                raise failed[0]
            return None
        where = {
            i: {(r.manager, r.worker) for r in answer}
            for i, answer in enumerate(answers)
            if answer is not None
        }
        gone = set().union(*where.values())
        try:
            self._follow_up(where, gone, lambda i: self._on(i, lambda s: reap_on(s, 0.0)) or [], answers)
        except Exception as exc:  # what was reaped is reported; the rest in a later round
            log.warning("reaping on the shards behind failed; they are reaped in a later round: %s", exc)
        merged: dict[tuple[str, str], Reaped] = {}
        for answer in answers:
            for reaped in answer or []:
                key = (reaped.manager, reaped.worker)
                old = merged.get(key)
                merged[key] = (
                    reaped
                    if old is None
                    else attrs.evolve(
                        old, requeued=old.requeued + reaped.requeued, failed=old.failed + reaped.failed
                    )
                )
        return list(merged.values())

    def _follow_up(
        self,
        where: dict[int, set[tuple[str, str]]],
        gone: set[tuple[str, str]],
        reap_again: Callable[[int], list[Reaped]],
        answers: list[list[Reaped] | None],
    ) -> None:
        """Reap again, for up to :data:`REAP_SPREAD` seconds, on each shard where a worker
        reaped elsewhere (``gone``) is still registered; ``where``: who each shard reaped
        so far; each new answer is appended to ``answers``."""
        deadline = time.monotonic() + REAP_SPREAD
        while True:
            behind = [i for i in where if self._registered_on(i, gone - where[i])]
            if not behind or time.monotonic() >= deadline:
                return
            time.sleep(0.01)
            for i in behind:  # this reaper's round already: no lease
                more = reap_again(i)
                answers.append(more)
                where[i] |= {(r.manager, r.worker) for r in more}

    def _registered_on(self, index: int, workers: set[tuple[str, str]]) -> bool:
        """Whether any of ``workers`` ((manager, worker) pairs) is still registered on shard ``index``."""
        return any(self._on(index, lambda s: [w in s.workers(m) for m, w in sorted(workers)]))

    def register_manager(self, name: str) -> None:
        self._everywhere(lambda s: s.register_manager(name))

    def deregister_manager(self, name: str) -> None:
        self._everywhere(lambda s: s.deregister_manager(name))

    def register_worker(self, *, manager: str, worker: str) -> None:
        self._everywhere(lambda s: s.register_worker(manager=manager, worker=worker))

    def deregister_worker(self, *, manager: str, worker: str) -> None:
        self._everywhere(lambda s: s.deregister_worker(manager=manager, worker=worker))

    # -- inspecting ----------------------------------------------------------------------

    def managers(self) -> list[str]:
        return sorted({m for names in self._all(lambda s: s.managers()) for m in names})

    def workers(self, manager: str) -> list[str]:
        return sorted({w for names in self._all(lambda s: s.workers(manager)) for w in names})

    def queued_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        return self._paged(lambda s, want: s.queued_job_ids(manager, queue=queue, limit=want), offset, limit)

    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        return self._paged(lambda s, want: s.held_job_ids(worker, limit=want), offset, limit)

    def queued_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        return sum(self._all(lambda s: s.queued_count(manager, queue=queue)))

    def held_count(self, worker: str) -> int:
        return sum(self._all(lambda s: s.held_count(worker)))

    def delayed_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        return sum(self._all(lambda s: s.delayed_count(manager, queue=queue)))

    def named_queues(self) -> list[str]:
        return sorted({q for names in self._all(lambda s: s.named_queues()) for q in names})

    def delayed_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        return self._paged(lambda s, want: s.delayed_job_ids(manager, queue=queue, limit=want), offset, limit)

    def get_job(self, job_id: str) -> Job | None:
        return self._first(self._likely(job_id), lambda s: s.get_job(job_id))

    def job_status(self, job_id: str) -> JobState:
        found = None
        for index in self._likely(job_id):
            state = self._on(index, lambda s: s.job_status(job_id))
            if state.state is not State.UNKNOWN:
                return state
            found = found or state
        assert found is not None
        return found

    def get_result(self, job_id: str) -> JobResult | None:
        return self._first(self._likely(job_id), lambda s: s.get_result(job_id))

    def wait_result(self, job_id: str, timeout: float) -> JobResult | None:
        # A job's result is written on the shard the job is on: find it, then wait there.
        index = self._likely(job_id)[0]
        for candidate in self._likely(job_id):
            if self._on(candidate, lambda s: s.job_status(job_id)).state is not State.UNKNOWN:
                index = candidate
                break
        return self._on(index, lambda s: s.wait_result(job_id, timeout))

    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        return self.failed_jobs_page(offset=0, limit=limit)

    def failed_jobs_page(self, *, offset: int = 0, limit: int = 100) -> list[FailedJob]:
        check_page(offset, limit)
        found = [
            f
            for page in self._all(lambda s: s.failed_jobs_page(offset=0, limit=offset + limit))
            for f in page
        ]
        found.sort(key=lambda f: f.failure.failed_at, reverse=True)  # newest first, as on one node
        return found[offset : offset + limit]

    def failed_count(self) -> int:
        return sum(self._all(lambda s: s.failed_count()))

    def get_failed(self, job_id: str) -> FailedJob | None:
        return self._first(self._likely(job_id), lambda s: s.get_failed(job_id))

    def running_jobs(self, manager: str) -> list[RunningJob]:
        found: dict[str, RunningJob] = {}
        for jobs in self._all(lambda s: s.running_jobs(manager)):
            for job in jobs:  # every shard keeps what workers run; only the job's knows its queue
                old = found.get(job.job_id)
                if old is None or (old.queue is None and job.queue is not None):
                    found[job.job_id] = job
        return sorted(found.values(), key=lambda j: (j.worker, j.job_id))

    def note_jobs_run(self, *, manager: str, count: int) -> None:
        self._on(id_shard(manager, self._n), lambda s: s.note_jobs_run(manager=manager, count=count))

    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        totals: dict[int, dict[str, int]] = {}
        for runs in self._all(lambda s: s.jobs_run(minutes=minutes)):
            for run in runs:
                counts = totals.setdefault(run.minute, {})
                for name, count in run.counts.items():
                    counts[name] = counts.get(name, 0) + count
        return [JobsRun(minute=m, counts=c) for m, c in sorted(totals.items())]

    def job_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        found = {
            i: None for ids in self._all(lambda s: s.job_ids_with_prefix(prefix, limit=limit)) for i in ids
        }
        return sorted(found)[:limit]

    def failed_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        found = {
            i: None for ids in self._all(lambda s: s.failed_ids_with_prefix(prefix, limit=limit)) for i in ids
        }
        return sorted(found)[:limit]

    def requeue_failed(self, job_id: str) -> bool:
        return any(self._on(i, lambda s: s.requeue_failed(job_id)) for i in self._likely(job_id))

    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        return sum(self._all(lambda s: s.purge_failed(job_ids)))

    def requeue_all_failed(self, *, progress: Callable[[Sequence[str]], None] | None = None) -> int:
        return sum(self._all(lambda s: s.requeue_all_failed(progress=progress)))

    def purge_all_failed(self, *, progress: Callable[[int], None] | None = None) -> int:
        return sum(self._all(lambda s: s.purge_all_failed(progress=progress)))

    def stray_queues(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for strays in self._all(lambda s: s.stray_queues()):
            for name, count in strays.items():
                totals[name] = totals.get(name, 0) + count
        return dict(sorted(totals.items()))

    def move_queued(self, name: str, *, to: str | None = None) -> int:
        return sum(self._all(lambda s: s.move_queued(name, to=to)))

    def problems(self) -> list[str]:
        return [problem for found in self._all(lambda s: s.problems()) for problem in found]

    def setup_warnings(self) -> list[str]:
        return list(dict.fromkeys(w for found in self._all(lambda s: s.setup_warnings()) for w in found))

    # -- periodic jobs -------------------------------------------------------------------

    def now(self) -> float:
        return self._on(0, lambda s: s.now())

    def _tick_shard(self, schedule_id: str, job: Job) -> int:
        unique = unique_of(job)
        if unique is not None and unique.key is not None:
            return id_shard(unique.key, self._n)  # where queue_jobs takes the same key
        return id_shard(schedule_id, self._n)

    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        index = self._tick_shard(schedule_id, job)
        return self._on(index, lambda s: s.enqueue_tick(schedule_id, tick, job, manager=manager))

    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        merged: dict[str, TickState | None] = {}
        for answer in self._everywhere(
            lambda s: s.declare_schedules(manager=manager, declarations=declarations, ttl=ttl)
        ):
            _latest(merged, answer)
        return merged

    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        return self._on(0, lambda s: s.schedule_declarations())

    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        merged: dict[str, TickState] = {}
        for answer in self._all(lambda s: s.tick_states(schedule_ids)):
            _latest(merged, answer)
        return merged

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str | None = None, options: RedisOptions | None = None) -> ClusterBroker:
        """Open the Redis Cluster at ``redis+cluster://host:port[,host:port...]/?shards=N``
        (``rediss+cluster://`` for TLS; a login as in a Redis URL; other query parameters
        as in a Redis URL, for every node).

        :raises ConfigurationError: the URL is malformed.
        :raises BrokerUnavailable: no node answers.
        """
        if url is None:
            raise ConfigurationError(f"a Redis Cluster needs a URL, such as {EXAMPLE}")
        return cls(url, options)

    def factory(self) -> BrokerFactory:
        return ClusterBrokerFactory(url=self._url, options=self._options)

    def check_name(self, name: str) -> str:
        return keys.check_name(name)

    def close(self) -> None:
        for broker in self._nodes.values():
            broker.close()

    def describe(self) -> str:
        return connection.redact_url(self._url)

    @property
    def shards(self) -> Sequence[RedisBroker]:
        """The per-shard brokers, in shard order (for tests and tools)."""
        return tuple(self._shards)

    def __iter__(self) -> Iterator[RedisBroker]:
        return iter(self._shards)


def _latest(merged: dict[str, Any], found: Mapping[str, TickState | None]) -> None:
    """Keep in ``merged`` each schedule's latest tick of those in ``found`` (``None``: none yet)."""
    for schedule_id, state in found.items():
        old = merged.get(schedule_id)
        if old is None or (state is not None and state.tick > old.tick):
            merged[schedule_id] = state


@attrs.frozen(kw_only=True)
class ClusterBrokerFactory:
    """Opens a :class:`ClusterBroker` like the one it was made from; picklable."""

    url: str
    options: RedisOptions = attrs.field(factory=RedisOptions)

    def __call__(self) -> ClusterBroker:
        return ClusterBroker(self.url, self.options)

    def __repr__(self) -> str:
        return f"ClusterBrokerFactory({connection.redact_url(self.url)!r})"
