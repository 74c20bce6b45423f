"""The memory backend's part of periodic jobs: declared schedules and their last ticks.

Kept beside :class:`~qw_core.memory.MemoryBroker`, which calls it under its own lock, so
that recording a tick and queueing its job are one step, as the contract asks of
:meth:`~qw_core.broker.Broker.enqueue_tick`. Declarations lapse after their TTL on the
monotonic clock, as heartbeats do; a last tick lasts as long as the broker (one process).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from qw_core.models import TickState
from qw_core.schedules import check_schedule_id


class ScheduleBook:
    """Declarations (manager → (id → declaration, expiry)) and last ticks (id → state).

    Not thread-safe by itself: its broker holds its lock around every call.
    """

    def __init__(self) -> None:
        self.declared: dict[str, tuple[dict[str, str], float]] = {}
        self.ticks: dict[str, TickState] = {}

    def declare(
        self, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        """See :meth:`Broker.declare_schedules <qw_core.broker.Broker.declare_schedules>`."""
        for schedule_id, text in declarations.items():
            check_schedule_id(schedule_id)
            if not isinstance(text, str):
                raise TypeError(f"the declaration of schedule {schedule_id!r} must be text")
        if declarations:
            self.declared[manager] = (dict(declarations), time.monotonic() + ttl)
        else:
            self.declared.pop(manager, None)
        return {schedule_id: self.ticks.get(schedule_id) for schedule_id in declarations}

    def live(self) -> dict[str, dict[str, str]]:
        """See :meth:`Broker.schedule_declarations <qw_core.broker.Broker.schedule_declarations>`."""
        now = time.monotonic()
        for manager in [m for m, (_, expiry) in self.declared.items() if expiry <= now]:
            del self.declared[manager]
        return {manager: dict(found) for manager, (found, _) in self.declared.items()}

    def states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        """See :meth:`Broker.tick_states <qw_core.broker.Broker.tick_states>`."""
        return {i: state for i in schedule_ids if (state := self.ticks.get(i)) is not None}

    def newer(self, schedule_id: str, tick: float) -> TickState | None:
        """``None`` if ``tick`` is newer than ``schedule_id``'s last tick, else that last tick."""
        check_schedule_id(schedule_id)
        last = self.ticks.get(schedule_id)
        return last if last is not None and tick <= last.tick else None
