"""What every role of the cluster broker shares: the shards, and the routing of a call to them.

Each role of :class:`~qw_redis.cluster.broker.ClusterBroker` is a module of this package
whose class subclasses :class:`ClusterBase`, as on a single node (see
:mod:`qw_redis.base`). Here is what they all need: one :class:`~qw_redis.broker.RedisBroker`
per shard on the primary that owns its tag's slot, found by asking the seed nodes
(``CLUSTER SLOTS``) and looked up again when a shard moves (a failover, a slot
migration), and the ways of calling the shards: one (:meth:`ClusterBase._on`), all
(``_all``, ``_everywhere``), the first that has an answer (``_first``, in the order
``_likely`` gives for a job id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import redis
from redis.crc import key_slot

from qw_core.broker import Broker
from qw_core.errors import BrokerUnavailable, QwError
from qw_redis import connection, keys
from qw_redis.broker import RedisBroker
from qw_redis.cluster.urls import id_shard, parse, shard_tag
from qw_redis.connection import RedisOptions

#: Every module of the package logs here, under the name the cluster broker always used.
log = logging.getLogger("qw_redis.cluster")

_T = TypeVar("_T")


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


class ClusterBase(Broker):
    """The shards every role of :class:`~qw_redis.cluster.broker.ClusterBroker` works
    through, and the ways of calling them."""

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

    def _likely(self, job_id: str) -> list[int]:
        """Every shard, the one most likely to hold ``job_id`` first."""
        first = self._where.get(job_id, id_shard(job_id, self._n))
        return [first, *(i for i in range(self._n) if i != first)]

    # -- lifecycle -----------------------------------------------------------------------

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
