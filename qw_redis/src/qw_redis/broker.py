"""The Redis backend: :class:`RedisBroker`, speaking the original qw key schema.

Keys are in :mod:`qw_redis.keys`, the hash encoding in :mod:`qw_redis.codec`, and every
operation touching more than one key is a Lua script (:mod:`qw_redis.scripts`), so each
broker method is one round trip, except a ``take`` that has to wait (how a worker waits,
and how a job queued meanwhile is handed to it, is told in :mod:`qw_redis.consuming`).

Each role is a module of this package, over one connection (:mod:`qw_redis.base`):
:mod:`qw_redis.producing`, :mod:`qw_redis.consuming`, :mod:`qw_redis.membership`,
:mod:`qw_redis.inspecting` and :mod:`qw_redis.listing` (the inspector's role, in two),
:mod:`qw_redis.administering` and :mod:`qw_redis.periodic`. This module assembles them,
and opens the broker from a URL.
"""

from __future__ import annotations

from typing import Any

from qw_core.broker import Broker
from qw_redis import connection, keys
from qw_redis.administering import AdministratorPart
from qw_redis.connection import DEFAULT_URL, RedisOptions
from qw_redis.consuming import ConsumerPart
from qw_redis.inspecting import InspectorPart
from qw_redis.listing import ListingPart
from qw_redis.membership import MembershipPart
from qw_redis.periodic import PeriodicPart
from qw_redis.producing import QUEUE_BATCH, ProducerPart

__all__ = ["QUEUE_BATCH", "RedisBroker"]


class RedisBroker(
    ProducerPart,
    ConsumerPart,
    MembershipPart,
    InspectorPart,
    ListingPart,
    AdministratorPart,
    PeriodicPart,
):
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
