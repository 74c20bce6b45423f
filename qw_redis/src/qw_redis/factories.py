"""Opening a broker again, in another thread or process: the picklable broker factories.

:meth:`RedisBroker.factory <qw_redis.broker.RedisBroker.factory>` hands one of these to
the manager, which passes it to every worker process (pickled under ``spawn``). A factory
holds a URL (with its password, which its ``repr`` hides) and the broker's options; one
made from an existing client copies the client's connection settings instead.
"""

from __future__ import annotations

from typing import Any

import attrs
import redis

from qw_core.broker import BrokerFactory
from qw_redis import connection
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions


def _is_fake(client: redis.Redis) -> bool:
    return bool(client.connection_pool.connection_class.__module__.startswith("fakeredis"))


def factory_for(client: redis.Redis, options: RedisOptions | None = None) -> BrokerFactory:
    """A factory opening brokers on the server ``client`` talks to, with its settings.

    Works for any redis-py client (its replies need not be decoded) and for fakeredis.
    """
    options = options or RedisOptions()
    kw = client.connection_pool.connection_kwargs
    if _is_fake(client):
        server, host, port, db = kw.get("server"), kw.get("host"), kw.get("port"), int(kw.get("db") or 0)
        return FakeRedisBrokerFactory(server=server, host=host, port=port, db=db, options=options)
    return RedisBrokerFactory(
        url=connection.client_url(client, with_password=True),
        options=options,
        extra=connection.client_extras(client),
    )


@attrs.frozen(kw_only=True, repr=False)
class RedisBrokerFactory:
    """Opens a :class:`RedisBroker` like the one it was made from; picklable.

    :param url: the Redis URL, password included (never shown: see ``repr``).
    :param options: the broker's options.
    :param extra: further ``redis.Redis`` settings copied from a client (TLS files, ...).
    """

    url: str
    options: RedisOptions = attrs.field(factory=RedisOptions)
    extra: tuple[tuple[str, Any], ...] = ()

    def __call__(self) -> RedisBroker:
        return RedisBroker._open(self.url, self.options, self.extra)

    def __repr__(self) -> str:
        return f"RedisBrokerFactory({connection.redact_url(self.url)!r})"


@attrs.frozen(kw_only=True)
class FakeRedisBrokerFactory:
    """Opens brokers on the same in-process fakeredis server, for other threads.

    A fake server lives in one process's memory: a forked child gets a copy, and it
    cannot be pickled for ``spawn``. (``qw run --embedded`` serves fakeredis over TCP
    instead, and uses :class:`RedisBrokerFactory`.)
    """

    server: Any  # a fakeredis.FakeServer, or None: then host and port name one
    host: Any = None
    port: Any = None
    db: int = 0
    options: RedisOptions = attrs.field(factory=RedisOptions)

    def __call__(self) -> RedisBroker:
        import fakeredis  # noqa: PLC0415 - only brokers built on fakeredis get here

        where = {"server": self.server} if self.server is not None else {"host": self.host, "port": self.port}
        client = fakeredis.FakeRedis(db=self.db, decode_responses=True, **where)
        return RedisBroker(client, self.options)
