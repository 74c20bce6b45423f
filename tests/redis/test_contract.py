"""The broker contract (qw_core.testing.BrokerContract) on fakeredis and on a real Redis.

The brokers block in slices of 10 s (instead of 0.5 s), so a take that a job did not wake
returns long after the contract's wake-up bound: the wake-up tests cannot pass by slicing.
"""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from qwtest_redis import BlockedTakes
from redis_support import redis_url

from qw_core.broker import Broker
from qw_core.testing import BrokerContract
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions

REDIS_DB = 9
LONG_SLICES = RedisOptions(block_slice=10.0, socket_timeout=30.0)


class RedisContract(BrokerContract):
    broker_class = RedisBroker

    @pytest.fixture(autouse=True)
    def _blocked(self) -> Iterator[None]:
        with BlockedTakes() as blocked:
            self._blocked_takes = blocked
            yield

    def blocked_takers(self, broker: Broker) -> int:
        return self._blocked_takes.count


class TestFakeRedisContract(RedisContract):
    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        broker = RedisBroker(client, LONG_SLICES)
        yield broker
        broker.close()
        client.close()


class TestRealRedisContract(RedisContract):
    @pytest.fixture
    def broker(self, real_client: object, redis_db: int) -> Iterator[Broker]:
        broker = RedisBroker.from_url(redis_url(redis_db), LONG_SLICES)
        yield broker
        broker.close()
