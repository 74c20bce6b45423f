"""Heartbeats, managers and the reaper: the :class:`~qw_core.broker.Membership` role of the cluster broker.

Memberships and heartbeats are written to every shard, so that each shard's reaper
recovers what dead workers left on it; one reaper round reaps every shard and follows up
on a worker whose heartbeat lapsed on some shards before the others. One part of
:class:`~qw_redis.cluster.broker.ClusterBroker`, over the shards of :mod:`qw_redis.cluster.base`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import attrs

from qw_core.broker import Reaped
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_redis.broker import RedisBroker
from qw_redis.cluster.base import ClusterBase, log
from qw_redis.cluster.urls import id_shard

#: Seconds a reaper waits for the heartbeat of a worker it reaped on some shards to lapse on
#: the others (one beat writes them a few milliseconds apart; a loaded host, more).
REAP_SPREAD = 0.5


class MembershipPart(ClusterBase):
    """The membership methods of :class:`~qw_redis.cluster.broker.ClusterBroker`."""

    def register_manager(self, name: str) -> None:
        self._everywhere(lambda s: s.register_manager(name))

    def deregister_manager(self, name: str) -> None:
        self._everywhere(lambda s: s.deregister_manager(name))

    def beat(
        self,
        *,
        manager: str,
        token: str,
        workers: Mapping[str, str],
        ttl: float,
        running: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, str | None]:
        changed: dict[str, str | None] = {}
        for answer in self._everywhere(
            lambda s: s.beat(manager=manager, token=token, workers=workers, ttl=ttl, running=running)
        ):
            for name, previous in answer.items():
                changed.setdefault(name, previous)
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
        """Each shard reaps its part of every worker (its held list there, its registration
        there). One beat writes a worker's heartbeat on every shard, a few milliseconds
        apart, so they lapse as far apart: a worker reaped on some shards is reaped on the
        others as soon as its heartbeat there lapses too, for up to :data:`REAP_SPREAD`
        seconds (one still beating there after that is alive, and left alone). A shard
        that cannot be reaped now (failing over, say) is left for a later round: what the
        others reaped is reported all the same, and only if every shard failed is the
        first error raised."""

        def reap_on(shard: RedisBroker, lease: float) -> list[Reaped] | None:
            return shard.reap(owner=owner, lease=lease, ttl=ttl, max_recoveries=max_recoveries, limits=limits)

        answers: list[list[Reaped] | None] = []
        failed: list[Exception] = []
        for index in range(self._n):
            try:
                answers.append(self._on(index, lambda s: reap_on(s, lease)))
            except Exception as exc:  # the other shards' reports must not be lost with it
                log.warning("reaping on shard %d failed; its part is reaped in a later round: %s", index, exc)
                failed.append(exc)
                answers.append(None)
        if all(answer is None for answer in answers):
            if failed:
                raise failed[0]
            return None
        where = {
            i: {(r.manager, r.worker) for r in answer}
            for i, answer in enumerate(answers)
            if answer is not None
        }
        gone = set().union(*where.values())
        try:
            self._follow_up(where, gone, lambda i: self._on(i, lambda s: reap_on(s, 0.0)) or [], answers)
        except Exception as exc:  # what was reaped is reported; the rest in a later round
            log.warning("reaping on the shards behind failed; they are reaped in a later round: %s", exc)
        merged: dict[tuple[str, str], Reaped] = {}
        for answer in answers:
            for reaped in answer or []:
                key = (reaped.manager, reaped.worker)
                old = merged.get(key)
                merged[key] = (
                    reaped
                    if old is None
                    else attrs.evolve(
                        old, requeued=old.requeued + reaped.requeued, failed=old.failed + reaped.failed
                    )
                )
        return list(merged.values())

    def _follow_up(
        self,
        where: dict[int, set[tuple[str, str]]],
        gone: set[tuple[str, str]],
        reap_again: Callable[[int], list[Reaped]],
        answers: list[list[Reaped] | None],
    ) -> None:
        """Reap again, for up to :data:`REAP_SPREAD` seconds, on each shard where a worker
        reaped elsewhere (``gone``) is still registered; ``where``: who each shard reaped
        so far; each new answer is appended to ``answers``."""
        deadline = time.monotonic() + REAP_SPREAD
        while True:
            behind = [i for i in where if self._registered_on(i, gone - where[i])]
            if not behind or time.monotonic() >= deadline:
                return
            time.sleep(0.01)
            for i in behind:  # this reaper's round already: no lease
                more = reap_again(i)
                answers.append(more)
                where[i] |= {(r.manager, r.worker) for r in more}

    def _registered_on(self, index: int, workers: set[tuple[str, str]]) -> bool:
        """Whether any of ``workers`` ((manager, worker) pairs) is still registered on shard ``index``."""
        return any(self._on(index, lambda s: [w in s.workers(m) for m, w in sorted(workers)]))

    def note_jobs_run(self, *, manager: str, count: int) -> None:
        self._on(id_shard(manager, self._n), lambda s: s.note_jobs_run(manager=manager, count=count))
