"""The broker contract as pytest tests: every backend runs the same suite.

A backend's test module subclasses :class:`BrokerContract` and defines one fixture,
``broker``, that yields a fresh, empty broker (and closes it afterwards), and one method,
``blocked_takers``, that says how many takes wait for a job right now::

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        def broker(self) -> Iterator[Broker]:
            broker = MyBroker.from_url(...)
            yield broker
            broker.close()

        def blocked_takers(self, broker: Broker) -> int:
            return ...  # e.g. count the blocking calls in flight, or ask the server

A test class may also name its broker's class, ``broker_class = MyBroker``: the parts of
the contract that need a capability it does not declare (``session_liveness``) are then
not collected, instead of skipped one by one.

After fsspec's abstract filesystem tests. Each test states one sentence of the contract
in :mod:`qw_core.broker`; timing tests use short delays and poll with a deadline, and a
second broker for another thread always comes from ``broker.factory()()``, since a broker
object serves one thread. Names follow the ``<manager>.<pid>`` convention, so a backend
may derive a worker's manager from its name; only the tests of
``capabilities.registered_managers`` use worker names that do not.
"""

from __future__ import annotations

import pytest

from qw_core.broker import Broker
from qw_core.testing.contract.data import DataContract
from qw_core.testing.contract.inspecting import InspectingContract
from qw_core.testing.contract.listing import ListingContract
from qw_core.testing.contract.liveness import LivenessContract
from qw_core.testing.contract.periodic import PeriodicContract
from qw_core.testing.contract.queues import QueuesContract
from qw_core.testing.contract.results import ResultsContract, StatusContract
from qw_core.testing.contract.scheduling import SchedulingContract
from qw_core.testing.contract.sessions import SessionContract
from qw_core.testing.contract.settling import SettlingContract
from qw_core.testing.contract.strays import StrayContract
from qw_core.testing.contract.taking import TakingContract
from qw_core.testing.contract.unique import UniqueContract

__all__ = ["BrokerContract"]


class BrokerContract(
    TakingContract,
    QueuesContract,
    ResultsContract,
    StatusContract,
    SettlingContract,
    DataContract,
    SchedulingContract,
    LivenessContract,
    SessionContract,
    StrayContract,
    ListingContract,
    PeriodicContract,
    InspectingContract,
    UniqueContract,
):
    """The contract of :class:`~qw_core.broker.Broker`, run against the ``broker`` fixture."""

    @pytest.fixture
    def broker(self) -> Broker:
        """A fresh, empty broker: every subclass defines this."""
        pytest.fail(f"{type(self).__name__} must define a `broker` fixture")
