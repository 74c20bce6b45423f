"""Fixtures for the Redis backend's tests: a fakeredis broker and real-Redis brokers.

Real-Redis tests use the server at 127.0.0.1:6379 (CI always starts one) and a database
of their own per test module (the module's ``REDIS_DB``), flushed before and after each
test; nothing else on the server is touched. If the server does not answer, those tests
fail with a clear message instead of being skipped, so a broken CI set-up cannot pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis
from redis_support import DEFAULT_DB, REDIS_HOST, REDIS_PORT, redis_url

from qw_redis.broker import RedisBroker


@pytest.fixture(scope="session")
def redis_server() -> None:
    """Fail (not skip) every real-Redis test if the server does not answer."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"no Redis server answers at {REDIS_HOST}:{REDIS_PORT} ({exc}); "
            "the Redis backend's tests need one (CI starts it: see .ci/run)",
            pytrace=False,
        )
    finally:
        client.close()


@pytest.fixture
def redis_db(request: pytest.FixtureRequest, redis_server: None) -> int:
    """This test module's own database number."""
    return int(getattr(request.module, "REDIS_DB", DEFAULT_DB))


@pytest.fixture
def real_client(redis_db: int) -> Iterator[redis.Redis]:
    """A plain redis-py client on the module's database, flushed before and after."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def real_broker(real_client: redis.Redis, redis_db: int) -> Iterator[RedisBroker]:
    """A broker on the real Redis, on the module's (empty) database."""
    broker = RedisBroker.from_url(redis_url(redis_db))
    yield broker
    broker.close()


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def fake_client(fake_server: fakeredis.FakeServer) -> Iterator[redis.Redis]:
    client = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def fake_broker(fake_client: redis.Redis) -> RedisBroker:
    """A broker on a fresh in-process fakeredis server (with Lua, through lupa)."""
    return RedisBroker(fake_client)
