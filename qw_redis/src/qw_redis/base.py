"""What every role of the Redis broker shares: its client, scripts, keys and options.

Each role of :class:`~qw_redis.broker.RedisBroker` is a module of this package whose
class subclasses :class:`RedisBase` (:mod:`qw_redis.producing`, :mod:`qw_redis.consuming`,
:mod:`qw_redis.membership`, :mod:`qw_redis.inspecting`, :mod:`qw_redis.listing`,
:mod:`qw_redis.administering`, :mod:`qw_redis.periodic`). Here is what they all need:
the connection and what is read from it once, the translation of redis errors into qw
errors at the boundary (:func:`translated`), the following of a Sentinel-managed primary,
name checks, and the helpers more than one role uses (where a job is queued, and the
recovery of a worker's jobs, which both a worker's own session and the reaper run).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import attrs
import redis
import redis.sentinel

from qw_core.broker import Broker, BrokerFactory, Capabilities, Reaped
from qw_core.errors import BrokerUnavailable, InvalidJob, InvalidName, JobCrashed, QwError
from qw_core.models import DEFAULT_QUEUE, Failure, Job
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_redis import codec, connection, keys, sentinel
from qw_redis.connection import RedisOptions
from qw_redis.scripts import FailedEntry, Scripts

log = logging.getLogger("qw.redis")

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S", bound="RedisBase")
#: Shortest blocking wait worth a round trip, in seconds.
MIN_BLOCK = 0.01
#: Least lifetime of a waiting worker's registration (``qw:idling:<w>``, see ``queue.lua``),
#: in milliseconds; it is also at least four blocking slices. A take deletes it; it
#: expires only when a worker stopped taking without one (it died, or was paused), after
#: which no job is handed to it.
IDLING_MIN_MS = 2_000
#: Seconds between two questions to the Sentinels of where the primary is (see
#: :meth:`RedisBase._follow_primary`): the longest a broker keeps writing to a primary
#: that was demoted but lives on.
FOLLOW_EVERY = 0.25


_Method = Callable[Concatenate[_S, _P], _R]


#: Broker methods after which a failover that already happened is not reported: a
#: producer's call goes to the new primary without a word (see ``_follow_primary``).
_QUIET_ON_MOVE = frozenset({"queue_jobs"})


def translated(method: _Method[_S, _P, _R]) -> _Method[_S, _P, _R]:
    """Turn the redis errors ``method`` raises into qw errors, at the boundary; follow a
    Sentinel-managed primary that moved (see :meth:`RedisBase._follow_primary`)."""
    quiet = method.__name__ in _QUIET_ON_MOVE

    @functools.wraps(method)
    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            if self._follow_at is not None:
                self._follow_primary(quiet=quiet)
            return method(self, *args, **kwargs)
        except redis.RedisError as exc:
            if connection.is_failover(exc):  # connected to a node that is no master now
                self._client.connection_pool.disconnect()
            raise self._error(exc) from exc

    return wrapper


def valid_name(name: str) -> bool:
    """Whether qw can build keys from ``name`` (one read from Redis may have been written
    by another program)."""
    try:
        keys.check_name(name)
    except InvalidName:  # written by something else: no key of ours can be built from it
        return False
    return True


class RedisBase(Broker):
    """The connection every role of :class:`~qw_redis.broker.RedisBroker` works through,
    and the helpers they share (see :class:`~qw_redis.broker.RedisBroker` for the
    parameters)."""

    capabilities = Capabilities(
        multi_host=True,
        max_take=100,
        delayed=True,
        schedules=True,
        throughput=True,
        unique=True,
        registered_managers=True,
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

    def _info_field(self, section: str, field: str) -> Any:
        """One field of ``INFO section``, or ``None`` where INFO is missing (fakeredis)."""
        try:
            return self._client.info(section).get(field)
        except redis.ResponseError:
            return None

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
