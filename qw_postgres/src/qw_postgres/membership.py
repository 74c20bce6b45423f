"""Heartbeats, managers and the reaper: the :class:`~qw_core.broker.Membership` role of the PostgreSQL broker.

Liveness is the manager's heartbeat, as on every backend (:mod:`qw_core.liveness`), kept
in ``<schema>.heartbeats`` with expiry times on the database's clock; the reaper's check
that a worker is dead and the move of its jobs are one transaction, serialised with the
heartbeat of the same name by an advisory lock. Besides, sessions
(:mod:`qw_postgres.sessions`): a broker that beats for a manager holds a lock that
PostgreSQL drops with its connection, as the one that registered a worker does, so that
a worker whose whole manager group is gone is reaped at once rather than a TTL later. A
worker that is stopped (SIGSTOP) or stuck keeps its connection and its lock: its
manager's heartbeat judges it, as on Redis. One part of
:class:`~qw_postgres.broker.PostgresBroker`, over the connection of :mod:`qw_postgres.base`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import psycopg

from qw_core.broker import Reaped
from qw_core.errors import QwError
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_postgres import sessions, uniques
from qw_postgres.base import RECOVERY_LOCK_TIMEOUT, PostgresBase, log, translated
from qw_postgres.names import check_name

#: Seconds the per-minute counts of jobs begun are kept (Broker.jobs_run reads an hour at most).
JOBS_RUN_KEEP = 2 * 3600


class MembershipPart(PostgresBase):
    """The membership methods of :class:`~qw_postgres.broker.PostgresBroker`."""

    @translated
    def register_manager(self, name: str) -> None:
        self._check_cached(name)
        self._connection().execute(
            f"INSERT INTO {self._schema}.managers (name) VALUES (%s) ON CONFLICT DO NOTHING", [name]
        )

    @translated
    def deregister_manager(self, name: str) -> None:
        self._check_cached(name)
        s = self._schema
        # One statement: a transaction of two, its process stopped between them, would hold
        # the deleted row and with it every reaper's sweep of managers.
        self._connection().execute(
            f"WITH gone AS (DELETE FROM {s}.managers WHERE name = %(name)s) "
            f"DELETE FROM {s}.heartbeats WHERE name = %(name)s",
            {"name": name},
        )
        self._close_session(name)

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
        self._check_cached(manager)
        for worker in [*workers, *(running or {})]:
            self._check_cached(worker)
        names = [manager, *workers]
        tokens = [token, *workers.values()]
        shown = None if running is None else json.dumps({w: dict(jobs) for w, jobs in running.items()})
        changed: dict[str, str | None] = dict(self._rows("BEAT", [names, tokens, float(ttl), shown]))
        if self.capabilities.session_liveness:
            self._keep_manager_session(manager, row_is_new=manager in changed)
        return changed

    def _keep_manager_session(self, manager: str, *, row_is_new: bool) -> None:
        """Make this object one of ``manager``'s sessions (:mod:`qw_postgres.sessions`): take
        its lock if this connection does not hold it (tried again each beat until it does),
        and flag its row again when the heartbeat had lapsed (a reaper may have deleted it)."""
        session = self._sessions.get(manager)
        if session is None or session.worker is not None:
            self._open_session(sessions.Session(manager=manager))
        elif not session.held:
            sessions.open_session(self._connection(), self._schema, session)
        elif row_is_new:
            sessions.flag_manager(self._connection(), self._schema, manager)

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
        """See :meth:`Broker.reap`; the lease is a row of ``leases``. Skips the round when
        the server started less than ``ttl`` seconds ago (``pg_postmaster_start_time``), or
        reinitialised after a server process crashed (which ends every connection and
        resets the statistics, ``pg_stat_bgwriter.stats_reset``, but not the start time):
        heartbeats may have lapsed while it was down, and every session lock went with it.
        A worker is dead when its heartbeat lapsed, or when its sessions and its manager's
        ended (:mod:`qw_postgres.sessions`), checked again as its jobs move."""
        s = self._schema
        conn = self._connection()
        if lease > 0:
            got = conn.execute(
                f"INSERT INTO {s}.leases AS l (name, owner, expires) VALUES ('reaper', %s, {s}.now_s() + %s) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
                f"WHERE l.expires <= {s}.now_s() RETURNING 1",
                [owner, float(lease)],
            ).fetchone()
            if got is None:
                return None
        [(uptime,)] = conn.execute(
            f"SELECT {s}.now_s() - extract(epoch FROM greatest(pg_postmaster_start_time(), "
            "(SELECT b.stats_reset FROM pg_stat_bgwriter b)))::double precision"
        ).fetchall()
        if uptime < ttl:
            return None
        dead = conn.execute(sessions.dead_candidates(s)).fetchall()
        reaped = []
        for manager, worker in dead:
            try:
                check_name(manager)
                check_name(worker)
            except QwError:
                continue
            try:
                done = self._recover(manager, worker, max_recoveries, if_dead=True, limits=limits)
            except psycopg.errors.LockNotAvailable:
                # A transaction of its own is open (a process paused half-way through it):
                # the others are reaped meanwhile, and this one in a later round.
                log.info("worker %s: one of its transactions holds a lock; reaped later", worker)
                continue
            if done is not None:
                reaped.append(done)
        try:
            # A row another transaction holds (one stopped half-way, an application's own
            # transaction holding a unique key) is waited for a second at most: the
            # clean-up is done again next round, and no round of any reaper is held up.
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{RECOVERY_LOCK_TIMEOUT}'")
                conn.execute(
                    f"DELETE FROM {s}.managers m WHERE m.beats "
                    f"AND NOT EXISTS (SELECT 1 FROM {s}.heartbeats h "
                    f"WHERE h.name = m.name AND h.expires > {s}.now_s()) "
                    f"AND NOT EXISTS (SELECT 1 FROM {s}.workers w WHERE w.manager = m.name)"
                )
                self._sweep()
                self._swept_to = uniques.sweep(conn, s, self._swept_to)
        except psycopg.errors.LockNotAvailable:
            log.info("the reaper's clean-up met a row another transaction holds; done next round")
        return reaped

    def _sweep(self) -> None:
        """Delete what outlived its time: results, heartbeats, running records, nudges
        nobody waited for, lapsed declarations and forgotten ticks (a bounded number each
        round; the readers skip expired rows meanwhile)."""
        s = self._schema
        conn = self._connection()
        for table, key, column, grace in (
            ("results", "id", "expires", 0),
            ("heartbeats", "name", "expires", 60),
            ("running", "worker", "expires", 0),
            ("nudges", "worker", "at", -60),
            ("declarations", "(manager, schedule_id)", "expires", 0),
            ("ticks", "schedule_id", "expires", 0),
        ):
            older = f"{column} < {s}.now_s() - {grace}" if grace >= 0 else f"{column} < {s}.now_s() + {grace}"
            conn.execute(
                f"DELETE FROM {s}.{table} WHERE {key} IN "
                f"(SELECT {key.strip('()')} FROM {s}.{table} WHERE {older} LIMIT 1000)"
            )

    @translated
    def note_jobs_run(self, *, manager: str, count: int) -> None:
        """See :meth:`Broker.note_jobs_run`: one upsert into ``jobs_run`` on the database's
        minute, which also deletes the minutes older than :data:`JOBS_RUN_KEEP` seconds."""
        super().note_jobs_run(manager=manager, count=count)
        self._check_cached(manager)
        if count:
            params = {"manager": manager, "count": count, "keep": JOBS_RUN_KEEP}
            self._connection().execute(self._sql["NOTE_JOBS_RUN"], params)
