"""The broker interface split by role: each contract written once, each caller typed
against the role it uses, and every role a context manager that closes the broker."""

from __future__ import annotations

import inspect
import typing

import pytest

from qw_core import naming, settle
from qw_core.broker import (
    Administrator,
    Broker,
    Consumer,
    Inspector,
    Membership,
    Periodic,
    Producer,
    Role,
)
from qw_core.dashboard import failed as dashboard_failed
from qw_core.dashboard import reads as dashboard_reads
from qw_core.errors import BrokerUnavailable
from qw_core.scheduler import Scheduler
from qw_core.tasks import TaskHandle
from qw_core.testing import MemoryBroker
from qw_core.worker import Worker

ROLES = (Role, Producer, Consumer, Membership, Inspector, Administrator, Periodic)


def _declared(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items() if not name.startswith("_") and callable(value)} | {
        name for name, value in vars(cls).items() if isinstance(value, classmethod)
    }


def test_broker_is_every_role() -> None:
    for role in ROLES:
        assert issubclass(Broker, role), role
        assert issubclass(MemoryBroker, role), role


def test_each_method_of_the_broker_is_declared_by_exactly_one_role() -> None:
    # A backend author reads each promise once, in the role that makes it; Broker itself
    # adds only from_url and the defaults that read through one role to serve another.
    public = {name for name in dir(Broker) if not name.startswith("_")} - {"capabilities", "from_url"}
    for name in public:
        owners = [role.__name__ for role in ROLES if name in _declared(role)]
        assert len(owners) == 1, (name, owners)
    assert _declared(Broker) == {"from_url", "still_held", "schedules"}
    assert Consumer.still_held.__isabstractmethod__  # type: ignore[attr-defined]
    assert Inspector.schedules.__isabstractmethod__  # type: ignore[attr-defined]


def test_an_administrator_reads_what_it_acts_on() -> None:
    assert issubclass(Administrator, Inspector)
    assert not issubclass(Consumer, Inspector)  # a worker never needs to list queues


@pytest.mark.parametrize(
    ("where", "parameter", "role"),
    [
        (Worker.__init__, "broker", Consumer),
        (settle.apply, "broker", Consumer),
        (Scheduler.step, "broker", Periodic),
        (naming.claim_name, "broker", Inspector),
        (naming.check_manager_name, "broker", Role),
        (dashboard_reads.overview, "broker", Inspector),
        (dashboard_failed.requeue_matching, "broker", Administrator),
    ],
)
def test_callers_are_typed_against_the_role_they_use(where: object, parameter: str, role: type) -> None:
    # mypy checks that each caller uses only its role; this checks that nobody widens a
    # caller back to the whole Broker, which would let the seam rot unseen.
    assert typing.get_type_hints(where)[parameter] is role


def test_a_task_handle_reads_its_result_through_the_producer_role() -> None:
    hint = typing.get_type_hints(TaskHandle)["broker"]
    assert hint is Producer


def test_with_closes_the_broker_on_exit() -> None:
    with MemoryBroker() as broker:
        client = broker.factory()()
        assert client.managers() == []
    with pytest.raises(BrokerUnavailable):
        client.managers()  # the server the memory broker ran for its clients is stopped


def test_with_closes_the_broker_when_the_block_raises() -> None:
    closed: list[bool] = []

    class Closing(MemoryBroker):
        def close(self) -> None:
            closed.append(True)
            super().close()

    def use() -> None:
        with Closing() as broker:
            assert isinstance(broker, Closing)  # __enter__ hands back the broker itself
            raise KeyError("boom")

    with pytest.raises(KeyError):
        use()
    assert closed == [True]


def test_the_role_docstrings_state_their_contract() -> None:
    # Each role says what it promises, for a backend written from the docs alone.
    for role in (Producer, Consumer, Membership, Inspector, Administrator, Periodic):
        doc = inspect.getdoc(role) or ""
        assert "The contract" in doc, role
