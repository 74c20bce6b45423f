"""Heartbeats, managers and the reaper: the :class:`~qw_core.broker.Membership` role of the Redis broker.

One part of :class:`~qw_redis.broker.RedisBroker`, over the connection of :mod:`qw_redis.base`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import redis

from qw_core.broker import Reaped
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_redis import codec
from qw_redis.base import RedisBase, log, translated, valid_name

#: Keys one reaper round's SCAN looks at for markers left behind (see ``_sweep_markers``).
SWEEP_STEP = 500
#: Seconds a minute's count of jobs begun is kept (``qw:jobs-run:<minute>``): the contract
#: asks for an hour at least.
JOBS_RUN_KEEP = 2 * 3600


class MembershipPart(RedisBase):
    """The membership methods of :class:`~qw_redis.broker.RedisBroker`."""

    @translated
    def register_manager(self, name: str) -> None:
        self._client.sadd(self._keys.ALL_MANAGERS, self.check_name(name))

    @translated
    def deregister_manager(self, name: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.srem(self._keys.ALL_MANAGERS, name)
        pipe.hdel(self._keys.MANAGERS, name)
        pipe.delete(self._keys.heartbeat(name))
        pipe.execute()

    @translated
    def beat(
        self,
        *,
        manager: str,
        token: str,
        workers: Mapping[str, str],
        ttl: float,
        running: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, str | None]:
        """See :meth:`Broker.beat`: ``beat.lua``; then, with ``running``, each worker's
        ``qw:running:<w>`` replaced in one pipeline (what it runs is for people to read:
        it need not be atomic with the heartbeat)."""
        self._check_cached(manager)
        for worker in workers:
            self._check_cached(worker)
        ttl_ms = max(1, round(ttl * 1000))
        changed = self._scripts.beat(manager=manager, token=token, workers=workers, ttl_ms=ttl_ms)
        if running:
            pipe = self._client.pipeline(transaction=False)
            for worker, jobs in running.items():
                self._check_cached(worker)
                pipe.delete(self._keys.running(worker))
                if jobs:
                    pipe.hset(self._keys.running(worker), mapping={j: repr(at) for j, at in jobs.items()})
                    pipe.pexpire(self._keys.running(worker), ttl_ms)
            pipe.execute()
        return {name: previous or None for name, previous in changed.items()}

    @translated
    def reap(
        self,
        *,
        owner: str,
        lease: float,
        ttl: float,
        max_recoveries: int | None = 3,
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[Reaped] | None:
        """See :meth:`Broker.reap`; the lease is ``SET qw:reaper <owner> NX PX``.

        Skips the round when Redis has been up for less than ``ttl`` seconds (a restart:
        heartbeats written before it may be gone, or lapsed while it was down).
        """
        if lease > 0 and not self._client.set(
            self._keys.REAPER, owner, nx=True, px=max(1, round(lease * 1000))
        ):
            return None
        uptime = self._info_field("server", "uptime_in_seconds")
        if uptime is not None and float(uptime) < ttl:
            return None
        managers = [
            m
            for m in sorted(cast("dict[str, str]", self._client.hgetall(self._keys.MANAGERS)))
            if valid_name(m)
        ]
        pipe = self._client.pipeline(transaction=False)
        for manager in managers:
            pipe.smembers(self._keys.manager_workers(manager))
            pipe.exists(self._keys.heartbeat(manager))
        found = pipe.execute(raise_on_error=False)
        workers = []
        for manager, members in zip(managers, found[::2], strict=True):
            if isinstance(members, Exception):  # one broken key must not stop every reaper
                log.error("cannot read the workers of manager %s: %s", codec.shown(manager), members)
                continue
            workers += [(manager, worker) for worker in sorted(members)]
        pipe = self._client.pipeline(transaction=False)
        for _, worker in workers:
            pipe.exists(self._keys.heartbeat(worker))
        reaped = []
        for (manager, worker), alive in zip(workers, pipe.execute(), strict=True):
            if not alive and valid_name(worker):
                done = self._recover(
                    manager, worker, if_dead=True, max_recoveries=max_recoveries, limits=limits
                )
                if done is not None:
                    reaped.append(done)
        for manager, members, alive in zip(managers, found[::2], found[1::2], strict=True):
            if not alive and not isinstance(members, Exception):
                self._scripts.forget_manager(manager)
        self._sweep_markers()
        return reaped

    def _sweep_markers(self) -> None:
        """One step of the sweep that drops markers left by original workers (see
        ``lua/sweep_markers.lua``): :data:`SWEEP_STEP` keys of a SCAN per reaper round, so
        the whole keyspace is covered in time, never in one long command."""
        try:
            self._sweep_cursor, found = self._client.scan(
                self._sweep_cursor, match=self._keys.JOB_MARKER_PATTERN, count=SWEEP_STEP
            )
            swept = self._scripts.sweep_markers([str(key) for key in found])
        except redis.RedisError as exc:  # the next round goes on; nothing depends on it
            log.warning("sweeping the markers of finished jobs failed: %s", exc)
            return
        if swept:
            log.info("dropped the markers of %d job(s) an original qw worker finished", swept)

    @translated
    def note_jobs_run(self, *, manager: str, count: int) -> None:
        """See :meth:`Broker.note_jobs_run`: ``note_run.lua`` (``HINCRBY`` on the server's
        minute, ``qw:jobs-run:<minute>``, kept :data:`JOBS_RUN_KEEP` seconds)."""
        super().note_jobs_run(manager=manager, count=count)
        self._check_cached(manager)
        if count:
            self._scripts.note_run(manager=manager, count=count, keep=JOBS_RUN_KEEP)
