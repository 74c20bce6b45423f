"""Session liveness: advisory locks that PostgreSQL drops with the connection.

Heartbeats (:mod:`qw_postgres.membership`) are written by a manager for itself and its
workers, and lapse a TTL (30 s) after the last one. When a whole manager group dies (kill
-9 of its process group, an out-of-memory kill of its container), its workers' jobs would
wait that long. PostgreSQL knows sooner: a session-level advisory lock lives exactly as
long as the connection that took it, and the dead processes' kernel closed their
connections. (A host that is lost outright closes nothing: the server keeps its
connections, and their locks, until its TCP keepalive gives up, so heartbeats judge it.)
So (``capabilities.session_liveness``, see :class:`~qw_core.broker.Membership`):

* **A worker's session** is the broker that registered it (its consumer connection, the
  one that takes and ``LISTEN``\\ s): it holds the lock ``(WORKER_LOCK,
  hashtext('<schema>:<worker>'))`` from :meth:`register_worker` until it deregisters the
  worker or is closed. **A manager's sessions** are the brokers that beat for it (its
  heartbeat thread's, which beats every few seconds, and its main one): each holds
  ``(MANAGER_LOCK, hashtext('<schema>:<manager>'))``.
* The locks are taken in **shared** mode, and the reaper tests them with an exclusive
  ``pg_try_advisory_xact_lock``, which fails while any session holds one. So several
  sessions of one manager may hold its lock at once; a worker whose old connection the
  server has not noticed is gone yet (a half-open TCP connection) takes it again beside
  it; and two names whose keys collide (32 bits) both hold it: each looks alive while
  the other does, and is then judged by its heartbeat. A collision never makes anyone
  dead early, since a lock that anyone holds is never free.
* A **flag on the row** (``workers.locked``, ``managers.locked``, schema version 2) says
  that a session took the lock: a worker registered by an older qw-postgres, through a
  URL that turned sessions off, or whose lock could not be taken (an error reply) is
  judged by its heartbeat alone. A worker's flag is set, to whether its lock was taken,
  under the per-name transaction lock that :meth:`beat` and the reaper's recovery take;
  a manager's is set once any of its sessions took its lock (another may hold it still
  when one fails).
* **The reaper** (:meth:`reap`) judges a worker dead when its heartbeat lapsed, as
  always, **or** when it and its manager are flagged and neither lock is held. The
  candidates are read from ``pg_locks`` (one read a round); each is then checked again
  inside the transaction that moves its jobs, with ``pg_try_advisory_xact_lock`` on the
  manager's key, then the worker's, so a session that takes a lock again meanwhile (it
  must first wait for the per-name lock the recovery holds) is never reaped while it
  holds it.
* **Why the manager's lock counts too.** When only a worker dies, its live manager sees
  the exit at once and settles it knowing what a reaper cannot: the jobs it ran
  successfully but had not finished yet (they must not run again), the one that overran
  its time limit (failed as a timeout, not put back as a crash), the one it died running
  (only that one is counted towards the poison-job limit). A reaper that beat the
  manager to it would undo all three, so a worker whose manager still has a session is
  left to its manager; the reaper acts at once only when the whole group is gone.
* **A connection lost and opened again.** A broker re-takes its sessions' locks on a new
  connection before anything else it was about to do (a take included), and sets the
  flags again (a worker reaped meanwhile is registered again, as its manager's next
  heartbeat would). Between the loss and that moment, a session has ended. A fault that
  cuts a live manager's sessions and one of its workers' off at once (the server
  terminating every connection of the application, a proxy restarting; not a network
  partition, during which the server keeps the connections and their locks until its
  TCP keepalive gives up) may then have that worker reaped by another host's reaper:
  the jobs it held go back to their queues and those it was running run twice, none is
  lost (its finishes are guarded and change nothing). The window is short: a manager's
  heartbeat thread reconnects within a heartbeat interval, and every manager whose own
  call failed does not reap for a TTL (:mod:`qw_core.liveness`). Nor does any reaper
  judge anyone in the TTL after the server started, or reinitialised after one of its
  processes crashed (either drops every lock).
* A stopped (SIGSTOP) or stuck process keeps its connection and its lock: it is reaped
  when its heartbeat lapses, exactly as without sessions (once it resumes, if it stopped
  half-way through a transaction of its own: the reaper waits a second at most for the
  locks that holds, :data:`~qw_postgres.base.RECOVERY_LOCK_TIMEOUT`, and reaps the others
  meanwhile). So is a worker whose manager
  was restarted under the same name before the reaper came (the new start holds the
  name's lock), and one whose old connection the server has not noticed is gone. A worker
  reaped while stopped that comes back is registered again by its manager's heartbeat,
  unflagged (its connection, and so its lock, never changed): heartbeats alone judge it
  from then on.
* **Poolers.** A pooler that lends one server connection to many clients (pgbouncer with
  ``pool_mode = transaction`` or ``statement``) breaks the rule a session lock stands for:
  the lock stays with the server connection, which may outlive the worker or be closed
  while it lives. Turn sessions off there with ``?liveness=heartbeats`` in the URL (of
  every manager and worker): their rows are then not flagged, and heartbeats alone judge
  them. (qw's waiting takes need ``LISTEN``, which such a pooler does not support either.)
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import psycopg

log = logging.getLogger("qw.postgres")

Connection = psycopg.Connection[Any]

#: The advisory lock class of workers' sessions (two-key form; the key is the name's hash).
WORKER_LOCK = 0x7178
#: The advisory lock class of managers' sessions.
MANAGER_LOCK = 0x7179

#: Takes a session's lock if no one holds it exclusively (the class, the key's text).
TRY_LOCK = "SELECT pg_try_advisory_lock_shared(%s, hashtext(%s))"


@attrs.define
class Session:
    """A session this broker object opened: a worker it registered or a manager it beat for.

    :param manager: the manager (itself, for a manager's session).
    :param worker: the worker; ``None`` for a manager's session.
    :param held: whether this broker's current connection holds its lock.
    :param warned: whether a failure to take the lock was logged already.
    """

    manager: str
    worker: str | None = None
    held: bool = False
    warned: bool = False

    @property
    def name(self) -> str:
        return self.manager if self.worker is None else self.worker

    @property
    def lock_class(self) -> int:
        return MANAGER_LOCK if self.worker is None else WORKER_LOCK


def open_session(conn: Connection, schema: str, session: Session) -> None:
    """Take ``session``'s lock on ``conn`` (if this connection does not hold it yet) and
    flag its row; sets ``session.held``.

    A worker's row is written (again) as :meth:`register_worker` writes it, with the flag
    set to whether the lock is held, under the per-name lock the reaper's recovery takes. A
    manager's row, written by its heartbeat, is flagged when the lock is taken.

    :raises psycopg.Error: the connection failed (an error reply to the lock itself only
        leaves the session unheld, judged by its heartbeat).
    """
    if session.worker is None:
        if not session.held:
            session.held = _try_lock(conn, schema, session)
            if session.held:
                flag_manager(conn, schema, session.manager)
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{schema}:{session.worker}"])
        if not session.held:
            session.held = _try_lock(conn, schema, session)
        conn.execute(
            f"INSERT INTO {schema}.workers AS w (manager, name, locked) VALUES (%s, %s, %s) "
            "ON CONFLICT (manager, name) DO UPDATE SET locked = excluded.locked",
            [session.manager, session.worker, session.held],
        )


def register_worker(conn: Connection, schema: str, manager: str, worker: str) -> None:
    """:meth:`register_worker` without a session: the row, flagged as holding no lock."""
    conn.execute(
        f"INSERT INTO {schema}.workers AS w (manager, name, locked) VALUES (%s, %s, false) "
        "ON CONFLICT (manager, name) DO UPDATE SET locked = false",
        [manager, worker],
    )


def flag_manager(conn: Connection, schema: str, manager: str) -> None:
    """Flag ``manager``'s row: one of its sessions holds its lock."""
    conn.execute(f"UPDATE {schema}.managers SET locked = true WHERE name = %s AND NOT locked", [manager])


def close_session(conn: Connection, schema: str, session: Session) -> None:
    """Release ``session``'s lock, if this connection holds it (its row was deleted first)."""
    if session.held:
        session.held = False
        conn.execute(
            "SELECT pg_advisory_unlock_shared(%s, hashtext(%s))",
            [session.lock_class, f"{schema}:{session.name}"],
        )


def _try_lock(conn: Connection, schema: str, session: Session) -> bool:
    """Whether ``conn`` took ``session``'s lock (shared); an error reply is a no (logged
    once per session), a failed connection raises."""
    try:
        with conn.transaction():  # a savepoint when a transaction is open
            row = conn.execute(TRY_LOCK, [session.lock_class, f"{schema}:{session.name}"]).fetchone()
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            raise
        if not session.warned:
            session.warned = True
            log.warning(
                "%s %s: could not take its session lock, so it is judged by its heartbeat alone: %s",
                "manager" if session.worker is None else "worker",
                session.name,
                " ".join(str(exc).split()),
            )
        return False
    return bool(row and row[0])


def dead_candidates(schema: str) -> str:
    """The query of :meth:`reap`'s candidates: workers of managers that beat whose heartbeat
    lapsed, or which are flagged, as is their manager, and whose locks nobody holds (one
    read of ``pg_locks``, checked again under the recovery's lock)."""
    s = schema
    return f"""
WITH held AS MATERIALIZED (
    SELECT l.classid, l.objid FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
        AND l.classid IN ({WORKER_LOCK}::oid, {MANAGER_LOCK}::oid)
        AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
)
SELECT w.manager, w.name FROM {s}.workers w JOIN {s}.managers m ON m.name = w.manager
WHERE m.beats AND (
    NOT EXISTS (SELECT 1 FROM {s}.heartbeats h WHERE h.name = w.name AND h.expires > {s}.now_s())
    OR (w.locked AND m.locked
        AND NOT EXISTS (SELECT 1 FROM held WHERE held.classid = {WORKER_LOCK}::oid
            AND held.objid = hashtext('{s}:' || w.name)::oid)
        AND NOT EXISTS (SELECT 1 FROM held WHERE held.classid = {MANAGER_LOCK}::oid
            AND held.objid = hashtext('{s}:' || m.name)::oid))
)
ORDER BY w.manager, w.name"""


def ended(conn: Connection, schema: str, manager: str, worker: str) -> bool:
    """Whether ``worker``'s session and its manager's have all ended: both flagged, and
    neither lock held by anyone. Called inside the recovery's transaction, after its
    per-name lock: the exclusive transaction locks it takes (the manager's first) keep
    either lock from being taken again until the recovery commits."""
    row = conn.execute(
        f"SELECT CASE WHEN NOT (w.locked AND m.locked) THEN false "
        f"WHEN NOT pg_try_advisory_xact_lock({MANAGER_LOCK}, hashtext('{schema}:' || m.name)) THEN false "
        f"ELSE pg_try_advisory_xact_lock({WORKER_LOCK}, hashtext('{schema}:' || w.name)) END "
        f"FROM {schema}.workers w JOIN {schema}.managers m ON m.name = w.manager "
        "WHERE w.manager = %s AND w.name = %s",
        [manager, worker],
    ).fetchone()
    return bool(row and row[0])
