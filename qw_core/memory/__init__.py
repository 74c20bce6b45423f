"""The in-memory backend: the whole broker model in one process, for tests and trials.

It serves one manager on one host, whose workers may be threads or processes (with the
broker living in the manager process): worker processes reach it through
:meth:`MemoryBroker.factory`, which starts a small JSON-over-socket server beside it
(:mod:`qw_core.memory_rpc`).

What qw does differently from the in-memory brokers of its peers (dramatiq's stub broker,
saq's in-memory queue), and why:

* **Jobs are stored as JSON text**, never as the caller's objects. A target that mutates
  its data cannot change the stored job, and data a networked backend could not carry
  (a set, NaN, integer keys) is refused here too, so tests against this backend do not
  pass by accident.
* **It keeps the held lists**, with the same guarded finish, recovery and take order as
  a real backend, so the worker and manager code is tested against the same contract the
  Redis backend satisfies (:class:`qw_core.testing.BrokerContract` runs on both).
* **Nothing polls.** A blocked :meth:`~MemoryBroker.take` waits on a condition variable
  that every write notifies, with its wait cut short at the next delayed job's due time;
  delayed jobs sit in a heap and move to their queue when due.
"""

from __future__ import annotations

from qw_core.errors import ConfigurationError
from qw_core.memory.administering import AdministratorPart
from qw_core.memory.consuming import ConsumerPart
from qw_core.memory.inspecting import InspectorPart
from qw_core.memory.membership import MembershipPart
from qw_core.memory.periodic import PeriodicPart
from qw_core.memory.producing import ProducerPart
from qw_core.memory.state import check_name
from qw_core.memory_rpc import MemoryFactory, MemoryServer

__all__ = ["MemoryBroker", "check_name"]


class MemoryBroker(
    ProducerPart, ConsumerPart, MembershipPart, InspectorPart, AdministratorPart, PeriodicPart
):
    """A complete broker in this process's memory (``qw run --backend memory``).

    Unlike the contract's minimum, one object may be shared by any number of threads:
    every method holds the state's lock, which is also what lets the server of
    :meth:`factory` call it from a thread per client. A forked child must not use the
    copy it inherited (it would diverge): it opens a client with the factory.

    Each role is a module of this package (:mod:`qw_core.memory.producing` and the
    others), over one state (:mod:`qw_core.memory.state`).
    """

    @classmethod
    def from_url(cls, url: str | None = None) -> MemoryBroker:
        """A new, empty broker for ``None`` or ``"memory://"``.

        :raises ConfigurationError: any other URL.
        """
        if url not in (None, "memory://"):
            raise ConfigurationError(f"the memory backend takes no URL but 'memory://', not {url!r}")
        return cls()

    def factory(self) -> MemoryFactory:
        """Opens clients of this broker in any process; the first call starts the server."""
        state = self._state
        with state.cond:
            if state.server is None:
                state.server = MemoryServer(self)
            return state.server.factory

    def check_name(self, name: str) -> str:
        """See :meth:`Broker.check_name` and :func:`check_name`."""
        return check_name(name)

    def close(self) -> None:
        """Stop the server of :meth:`factory`, if one runs; its clients are cut off."""
        with self._state.cond:
            server, self._state.server = self._state.server, None
        if server is not None:
            server.close()

    def describe(self) -> str:
        """``memory://``."""
        return "memory://"
