"""Periodic jobs' ticks: the :class:`~qw_core.broker.Periodic` role of the Redis broker.

Each method delegates to :mod:`qw_redis.ticks`, at the broker's error boundary. One part
of :class:`~qw_redis.broker.RedisBroker`, over the connection of :mod:`qw_redis.base`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from qw_core.models import DEFAULT_QUEUE, Job, TickResult, TickState
from qw_redis import ticks
from qw_redis.base import RedisBase, translated


class PeriodicPart(RedisBase):
    """The periodic methods of :class:`~qw_redis.broker.RedisBroker`."""

    @translated
    def now(self) -> float:
        """See :meth:`Broker.now`: Redis's ``TIME``."""
        return ticks.server_time(self._client)

    @translated
    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        """See :meth:`Broker.enqueue_tick`: one ``tick.lua`` call."""
        self._check_cached(manager)
        if job.queue is not None and job.queue != DEFAULT_QUEUE:
            self._check_cached(job.queue)
        return ticks.enqueue_tick(
            self._scripts, schedule_id, tick, job, manager=manager, max_size=self._options.max_job_size
        )

    @translated
    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        """See :meth:`Broker.declare_schedules`: one ``declare.lua`` call."""
        self._check_cached(manager)
        return ticks.declare(self._scripts, manager=manager, declarations=declarations, ttl=ttl)

    @translated
    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        """See :meth:`Broker.schedule_declarations`."""
        return ticks.declarations(self._client, self._keys)

    @translated
    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        """See :meth:`Broker.tick_states`."""
        return ticks.states(self._client, schedule_ids, self._keys)
