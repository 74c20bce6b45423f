"""Periodic jobs' ticks: the :class:`~qw_core.broker.Periodic` role of the cluster broker.

A tick is queued on one shard (its unique key's, else its schedule's), so that two
managers queueing the same tick meet there; schedule declarations are written to every
shard, and each schedule's latest tick is the latest any shard saw. One part of
:class:`~qw_redis.cluster.broker.ClusterBroker`, over the shards of :mod:`qw_redis.cluster.base`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qw_core.models import Job, TickResult, TickState
from qw_core.unique import unique_of
from qw_redis.cluster.base import ClusterBase
from qw_redis.cluster.urls import id_shard


class PeriodicPart(ClusterBase):
    """The periodic methods of :class:`~qw_redis.cluster.broker.ClusterBroker`."""

    def now(self) -> float:
        return self._on(0, lambda s: s.now())

    def _tick_shard(self, schedule_id: str, job: Job) -> int:
        unique = unique_of(job)
        if unique is not None and unique.key is not None:
            return id_shard(unique.key, self._n)  # where queue_jobs takes the same key
        return id_shard(schedule_id, self._n)

    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        index = self._tick_shard(schedule_id, job)
        return self._on(index, lambda s: s.enqueue_tick(schedule_id, tick, job, manager=manager))

    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        merged: dict[str, TickState | None] = {}
        for answer in self._everywhere(
            lambda s: s.declare_schedules(manager=manager, declarations=declarations, ttl=ttl)
        ):
            _latest(merged, answer)
        return merged

    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        return self._on(0, lambda s: s.schedule_declarations())

    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        merged: dict[str, TickState] = {}
        for answer in self._all(lambda s: s.tick_states(schedule_ids)):
            _latest(merged, answer)
        return merged


def _latest(merged: dict[str, Any], found: Mapping[str, TickState | None]) -> None:
    """Keep in ``merged`` each schedule's latest tick of those in ``found`` (``None``: none yet)."""
    for schedule_id, state in found.items():
        old = merged.get(schedule_id)
        if old is None or (state is not None and state.tick > old.tick):
            merged[schedule_id] = state
