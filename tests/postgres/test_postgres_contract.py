"""The broker contract (qw_core.testing.BrokerContract) on PostgreSQL, a schema per test.

A take that no notification wakes waits up to the backend's safety poll (30 s), longer
than the contract's wake-up bound, so the wake-up tests cannot pass by polling.
"""

from __future__ import annotations

import pytest

from qw_core.broker import Broker
from qw_core.testing import BrokerContract
from qw_postgres.broker import PostgresBroker, waiting_takes


class TestPostgresContract(BrokerContract):
    broker_class = PostgresBroker

    @pytest.fixture
    def broker(self, pg_broker: PostgresBroker) -> Broker:
        return pg_broker

    def blocked_takers(self, broker: Broker) -> int:
        return waiting_takes()
