"""Heartbeats, managers and the reaper: the :class:`~qw_core.broker.Membership` role of the memory broker.

One part of :class:`~qw_core.memory.MemoryBroker`, over the state of :mod:`qw_core.memory.state`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from qw_core.broker import Reaped
from qw_core.memory.state import KEEP_MINUTES, MemoryBase
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits


class MembershipPart(MemoryBase):
    """The membership methods of :class:`~qw_core.memory.MemoryBroker`."""

    def register_manager(self, name: str) -> None:
        """See :meth:`Broker.register_manager`."""
        self.check_name(name)
        with self._state.cond:
            self._state.managers.add(name)

    def deregister_manager(self, name: str) -> None:
        """See :meth:`Broker.deregister_manager`."""
        self.check_name(name)
        with self._state.cond:
            self._state.managers.discard(name)
            self._state.beating.pop(name, None)
            self._state.heartbeats.pop(name, None)

    def beat(
        self,
        *,
        manager: str,
        token: str,
        workers: Mapping[str, str],
        ttl: float,
        running: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, str | None]:
        """See :meth:`Broker.beat`."""
        for name in (manager, *workers):
            self.check_name(name)
        state = self._state
        with state.cond:
            now = time.monotonic()
            changed: dict[str, str | None] = {}
            for name, mine in ((manager, token), *workers.items()):
                previous = state.heartbeats[name][0] if state.alive(name, now) else None
                if previous != mine:
                    changed[name] = previous
                state.heartbeats[name] = (mine, now + ttl)
            state.managers.add(manager)
            state.beating[manager] = token
            state.workers[manager].update(workers)
            for worker, jobs in (running or {}).items():
                state.running[worker] = (dict(jobs), now + ttl)
            return changed

    def reap(
        self,
        *,
        owner: str,
        lease: float,
        ttl: float,
        max_recoveries: int | None = 3,
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[Reaped] | None:
        """See :meth:`Broker.reap`; the server never restarts, so ``ttl`` is not used."""
        state = self._state
        with state.cond:
            now = time.monotonic()
            if lease > 0:
                if state.lease is not None and state.lease[1] > now:
                    return None
                state.lease = (owner, now + lease)
            reaped = [
                self._recover(manager, worker, max_recoveries, limits=limits)
                for manager in sorted(state.beating)
                for worker in sorted(state.workers.get(manager, ()))
                if not state.alive(worker, now)
            ]
            for manager in list(state.beating):
                if not state.alive(manager, now) and not state.workers.get(manager):
                    del state.beating[manager]
                    state.managers.discard(manager)
            return reaped

    def note_jobs_run(self, *, manager: str, count: int) -> None:
        """See :meth:`Broker.note_jobs_run`; the last :data:`KEEP_MINUTES` minutes are kept."""
        super().note_jobs_run(manager=manager, count=count)
        self.check_name(manager)
        minute = int(time.time() // 60) * 60
        with self._state.cond:
            counts = self._state.jobs_run.setdefault(minute, {})
            counts[manager] = counts.get(manager, 0) + count
            for old in [m for m in self._state.jobs_run if m <= minute - 60 * KEEP_MINUTES]:
                del self._state.jobs_run[old]
