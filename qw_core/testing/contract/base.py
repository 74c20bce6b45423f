"""What every part of the broker contract may ask of the backend's test class."""

from __future__ import annotations

import pytest

from qw_core.broker import Broker


class ContractPart:
    """The base of each part of :class:`~qw_core.testing.contract.BrokerContract`."""

    def blocked_takers(self, broker: Broker) -> int:
        """How many takes (from any broker on ``broker``'s backend) are blocked waiting for
        a job right now: every backend's test class defines this.

        Tests that check that queueing or putting back a job wakes a blocked take wait
        for one first, so they test a wake-up and not a take that had not begun to wait.
        A backend may count its blocking calls in flight (the Redis tests wrap the
        client's ``BLPOP``), or ask its server.
        """
        pytest.fail(f"{type(self).__name__} must define `blocked_takers`")
