"""Fixtures for the Redis backend's tests: a fakeredis broker and real-Redis brokers.

Real-Redis tests use this test process's own redis-server (``qwtest_redis``) and a
database of their own per test module (the module's ``REDIS_DB``), flushed before and
after each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis
from qwtest_cluster import LocalCluster
from qwtest_redis import flushed_db
from redis_support import DEFAULT_DB, redis_url

from qw_redis.broker import RedisBroker


@pytest.fixture
def redis_db(request: pytest.FixtureRequest) -> int:
    """This test module's own database number."""
    return int(getattr(request.module, "REDIS_DB", DEFAULT_DB))


@pytest.fixture
def real_client(redis_db: int) -> Iterator[redis.Redis]:
    """A plain redis-py client on the module's database, flushed before and after."""
    with flushed_db(redis_db) as client:
        yield client


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


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """A Redis Cluster of six nodes (three primaries with a replica each), for this test
    process's session (see :mod:`qwtest_cluster`)."""
    with LocalCluster() as cluster:
        yield cluster


@pytest.fixture
def empty_cluster(local_cluster: LocalCluster) -> LocalCluster:
    """The session's cluster, every primary flushed and every slot served."""
    local_cluster.wait_ok()
    for node in local_cluster.alive():
        with local_cluster.client(node) as client:
            if client.execute_command("ROLE")[0] == "master":
                client.flushall()
    return local_cluster
