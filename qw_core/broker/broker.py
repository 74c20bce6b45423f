"""The whole broker: every role in one class, which each backend subclasses.

A backend implements all the roles on one object (one connection serves them all), so
it subclasses :class:`Broker`. Callers are typed against the role they use (a worker's
loop sees a :class:`~qw_core.broker.Consumer`, ``qw status`` an
:class:`~qw_core.broker.Inspector`), so what each one may do is checked by mypy.

The few defaults that need two roles live here rather than in either: each reads through
one role to serve another, and a backend that can do better overrides it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

from qw_core.broker.administrator import Administrator
from qw_core.broker.consumer import Consumer
from qw_core.broker.membership import Membership
from qw_core.broker.periodic import Periodic
from qw_core.broker.producer import Producer
from qw_core.models import ScheduleInfo

#: Opens a broker; must be picklable so worker processes started with ``spawn`` can call it.
BrokerFactory = Callable[[], "Broker"]


class Broker(Producer, Consumer, Membership, Administrator, Periodic):
    """Where jobs wait, who holds them, and who is running: every role of the broker.

    A backend subclasses this and implements every abstract method of the roles; one it
    misses keeps the class from being instantiated. Optional parts keep their defaults
    unless the backend declares them in its :class:`~qw_core.broker.Capabilities`.
    """

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str | None = None) -> Broker:
        """Open a broker from a URL (``None``: the backend's default, e.g. localhost).

        This is how ``qw run --backend NAME --url URL`` opens the backend.

        :raises ConfigurationError: the URL is malformed (the message hides passwords).
        :raises BrokerUnavailable: the server cannot be reached.
        """

    def still_held(self, *, worker: str, job_ids: Sequence[str]) -> list[bool]:
        """See :meth:`Consumer.still_held <qw_core.broker.Consumer.still_held>`. This
        default reads :meth:`held_job_ids`; a backend that can answer more cheaply
        overrides it."""
        held = set(self.held_job_ids(worker))
        return [job_id in held for job_id in job_ids]

    def schedules(self) -> list[ScheduleInfo]:
        """See :meth:`Inspector.schedules <qw_core.broker.Inspector.schedules>`: built
        from :meth:`schedule_declarations`, :meth:`tick_states` and :meth:`now`."""
        if not self.capabilities.schedules:
            return []
        from qw_core.schedules import listed_schedules  # noqa: PLC0415 - it imports this module

        declared = self.schedule_declarations()
        ids = sorted({schedule_id for found in declared.values() for schedule_id in found})
        return listed_schedules(declared, self.tick_states(ids), self.now())
