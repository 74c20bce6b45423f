"""Periodic jobs' ticks: the :class:`~qw_core.broker.Periodic` role of the memory broker.

One part of :class:`~qw_core.memory.MemoryBroker`, over the state of :mod:`qw_core.memory.state`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from qw_core.errors import InvalidJob
from qw_core.memory.state import MemoryBase, named_origin
from qw_core.models import Job, TickResult, TickState
from qw_core.schedules import check_tick
from qw_core.unique import unique_of


class PeriodicPart(MemoryBase):
    """The periodic methods of :class:`~qw_core.memory.MemoryBroker`."""

    def now(self) -> float:
        """See :meth:`Broker.now`: the broker's clock (``clock``, or this host's)."""
        return float(self._clock())

    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        """See :meth:`Broker.enqueue_tick`: checked, recorded and queued under one lock."""
        self.check_name(manager)
        tick = check_tick(tick)
        if job.worker is not None or job.manager is not None:
            raise InvalidJob(
                f"job {job.id} of a tick names a manager or worker: a tick's job goes to a queue"
            )
        text = self._encode(job)  # refused before anything is written
        unique = unique_of(job)
        state = self._state
        with state.cond:
            last = state.schedules.newer(schedule_id, tick)
            if last is not None:
                return TickResult(enqueued=False, last=last)
            job_id = job.id
            if job.id not in state.jobs:
                # A unique job is queued only if it takes its key; else the holder is the tick's job.
                holder = None
                if unique is not None and unique.key is not None:
                    now = time.monotonic()
                    holder = state.unique.holder(
                        unique.key, stored=self._stored, started=self._started, now=now
                    )
                    if holder is None:
                        state.unique.claim(unique, job.id, now=now)
                if holder is not None:
                    job_id = holder
                else:
                    state.jobs[job.id] = text
                    state.queues[named_origin(job.queue)].append(job.id)
                    state.cond.notify_all()
            recorded = TickState(tick=float(tick), manager=manager, at=self.now(), job_id=job_id)
            state.schedules.ticks[schedule_id] = recorded
            return TickResult(enqueued=True, last=recorded)

    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        """See :meth:`Broker.declare_schedules`."""
        self.check_name(manager)
        with self._state.cond:
            return self._state.schedules.declare(manager, declarations, ttl)

    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        """See :meth:`Broker.schedule_declarations`."""
        with self._state.cond:
            return self._state.schedules.live()

    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        """See :meth:`Broker.tick_states`."""
        with self._state.cond:
            return self._state.schedules.states(schedule_ids)
