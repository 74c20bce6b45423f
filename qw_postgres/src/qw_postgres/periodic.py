"""Periodic jobs' ticks: the :class:`~qw_core.broker.Periodic` role of the PostgreSQL broker.

Each method delegates to :mod:`qw_postgres.ticks`, at the broker's error boundary. One
part of :class:`~qw_postgres.broker.PostgresBroker`, over the connection of
:mod:`qw_postgres.base`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from qw_core.errors import InvalidJob
from qw_core.models import Job, TickResult, TickState
from qw_core.schedules import check_schedule_id, check_tick
from qw_core.unique import unique_of
from qw_postgres import ticks
from qw_postgres.base import PostgresBase, translated


class PeriodicPart(PostgresBase):
    """The periodic methods of :class:`~qw_postgres.broker.PostgresBroker`."""

    @translated
    def now(self) -> float:
        """See :meth:`Broker.now`: the database's clock (``clock_timestamp()``)."""
        return ticks.now(self._connection(), self._schema)

    @translated
    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        """See :meth:`Broker.enqueue_tick`: one statement (``record_tick()`` and the job's insert)."""
        self._check_cached(manager)
        check_schedule_id(schedule_id)
        tick = check_tick(tick)
        if job.worker is not None or job.manager is not None:
            raise InvalidJob(
                f"job {job.id} of a tick names a manager or worker: a tick's job goes to a queue"
            )
        stored = self._encode_new(job)  # as queue_jobs stores it; refused before anything is written
        conn = self._connection()
        unique = unique_of(job)
        if unique is not None:
            staged = (*stored, unique)
            return ticks.enqueue_unique_tick(conn, self._schema, schedule_id, tick, staged, manager=manager)
        return ticks.enqueue_tick(conn, self._schema, schedule_id, tick, stored, manager=manager)

    @translated
    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        """See :meth:`Broker.declare_schedules`: one statement."""
        self._check_cached(manager)
        return ticks.declare(
            self._connection(), self._schema, manager=manager, declarations=declarations, ttl=ttl
        )

    @translated
    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        """See :meth:`Broker.schedule_declarations`."""
        return ticks.declarations(self._connection(), self._schema)

    @translated
    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        """See :meth:`Broker.tick_states`."""
        return ticks.states(self._connection(), self._schema, schedule_ids)
