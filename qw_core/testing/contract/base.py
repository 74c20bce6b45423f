"""What every part of the broker contract may ask of the backend's test class."""

from __future__ import annotations

import pytest

from qw_core.broker import Broker


class ContractPart:
    """The base of each part of :class:`~qw_core.testing.contract.BrokerContract`.

    A part whose every test needs one capability names it in :attr:`requires`; a test
    class that names its broker's class in :attr:`broker_class` then does not collect
    the tests of a part its broker lacks (they would only skip).
    """

    #: The ``Capabilities`` flag every test of this part needs (``None``: none).
    requires: str | None = None
    #: The class of the brokers the ``broker`` fixture yields, if the test class says so.
    broker_class: type[Broker] | None = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.broker_class is None:
            return
        for part in cls.__mro__:
            required = part.__dict__.get("requires")
            if not (isinstance(part, type) and issubclass(part, ContractPart) and required):
                continue
            if getattr(cls.broker_class.capabilities, required):
                continue
            for name in part.__dict__:
                if name.startswith("test_"):
                    setattr(cls, name, None)  # not collected: the broker lacks `required`

    def blocked_takers(self, broker: Broker) -> int:
        """How many takes (from any broker on ``broker``'s backend) are blocked waiting for
        a job right now: every backend's test class defines this.

        Tests that check that queueing or putting back a job wakes a blocked take wait
        for one first, so they test a wake-up and not a take that had not begun to wait.
        A backend may count its blocking calls in flight (the Redis tests wrap the
        client's ``BLPOP``), or ask its server.
        """
        pytest.fail(f"{type(self).__name__} must define `blocked_takers`")
