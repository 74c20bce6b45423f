"""The broker contract (qw_core.testing.BrokerContract) on fakeredis and on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from qw_core.broker import Broker
from qw_core.testing import BrokerContract
from qw_redis.broker import RedisBroker

REDIS_DB = 9


class TestFakeRedisContract(BrokerContract):
    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
        broker = RedisBroker(client)
        yield broker
        broker.close()
        client.close()


class TestRealRedisContract(BrokerContract):
    @pytest.fixture
    def broker(self, real_broker: RedisBroker) -> Broker:
        return real_broker
