"""What every role of the PostgreSQL broker shares: its connection, statements and schema.

Each role of :class:`~qw_postgres.broker.PostgresBroker` is a module of this package whose
class subclasses :class:`PostgresBase` (:mod:`qw_postgres.producing`,
:mod:`qw_postgres.consuming`, :mod:`qw_postgres.membership`, :mod:`qw_postgres.inspecting`,
:mod:`qw_postgres.listing`, :mod:`qw_postgres.administering`, :mod:`qw_postgres.periodic`).
Here is what they all need: the connection (opened again after it is lost), the
translation of psycopg's errors into qw's at the boundary (:func:`translated`), the
statements of :mod:`qw_postgres.sql`, ``LISTEN`` and the wait for a notification, name
checks, and the helpers more than one role uses (where a job waits, and the failing and
recovery of a worker's jobs, which both a worker's own session and the reaper run).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import attrs
import psycopg

from qw_core.broker import Broker, Capabilities, Reaped
from qw_core.errors import JobCrashed, QwError
from qw_core.models import Failure, Job
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_postgres import codec, sessions
from qw_postgres.connection import Settings, connect, unavailable
from qw_postgres.names import check_name
from qw_postgres.schema import channel
from qw_postgres.sql import statements

log = logging.getLogger("qw.postgres")

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S", bound="PostgresBase")

#: The longest an idle take waits for a notification before it looks again (seconds).
SAFETY_POLL = 30.0

#: How long a reaper's recovery of a worker waits for a lock another transaction holds (its
#: name's, one of its jobs'), as ``lock_timeout``: one of the worker's own, left open by a
#: process paused in the middle of it, would otherwise hold up every reaper for as long.
RECOVERY_LOCK_TIMEOUT = "1s"

Connection = psycopg.Connection[Any]

_waiting_lock = threading.Lock()
_waiting = 0


def waiting_takes() -> int:
    """How many takes in this process wait for a notification right now (for tests that
    must act while a take waits, as the broker contract's do)."""
    with _waiting_lock:
        return _waiting


def _count_waiting(step: int) -> None:
    global _waiting  # noqa: PLW0603 - a process-wide gauge, read by tests
    with _waiting_lock:
        _waiting += step


def translated(
    method: Callable[Concatenate[_S, _P], _R],
) -> Callable[Concatenate[_S, _P], _R]:
    """Turn psycopg's errors into qw's: a lost or refused connection is an outage
    (:class:`~qw_core.errors.BrokerUnavailable`, the connection dropped so the next call
    opens a new one); any other database error is a :class:`QwError` of one line."""

    @functools.wraps(method)
    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    return wrapper


def _origin(job: Job) -> str:
    """Where ``job`` waits (see the ``origin`` column in :mod:`qw_postgres.schema`)."""
    if job.worker is not None:  # not taken until its worker takes it (whatever manager it names)
        return "w"
    if job.manager is not None:
        return f"m:{job.manager}"
    if job.queue is not None:
        return f"q:{job.queue}"
    return "default"


def _manager_of(worker: str) -> str:
    """Where a job ``worker`` never took goes back if ``worker`` is registered under no
    manager (a settle call looks for the manager it registered under first: ``_HOME`` in
    :mod:`qw_postgres.sql`): the queue of the manager its name says, by the
    ``<manager>.<pid>`` convention; a name of another form names none: the shared queue."""
    head, dot, _ = worker.rpartition(".")
    return f"m:{head}" if dot and head else "default"


class PostgresBase(Broker):
    """The connection every role of :class:`~qw_postgres.broker.PostgresBroker` works
    through, and the helpers they share (see :class:`~qw_postgres.broker.PostgresBroker`
    for the parameters)."""

    capabilities = Capabilities(
        multi_host=True,
        max_take=100,
        delayed=True,
        schedules=True,
        migrations=True,
        throughput=True,
        unique=True,
        registered_managers=True,
        session_liveness=True,
    )

    def __init__(self, settings: Settings, conn: Connection | None = None, *, url: str | None = None) -> None:
        if not settings.sessions:  # liveness=heartbeats: this broker opens no session
            self.capabilities = attrs.evolve(type(self).capabilities, session_liveness=False)
        self._settings = settings
        self._schema = settings.schema
        self._sql = statements(settings.schema)
        self._conn = conn
        self._url = url
        self._listening: set[str] = set()
        self._names: set[str] = set()
        self._swept_to = ""  # where the next sweep of unique keys starts (see qw_postgres.uniques)
        #: The sessions this object opened (qw_postgres.sessions), by worker or manager name.
        self._sessions: dict[str, sessions.Session] = {}

    def check_name(self, name: str) -> str:
        return check_name(name)

    def _check_cached(self, name: str) -> None:
        if name not in self._names:
            self._names.add(check_name(name))

    def close(self) -> None:
        """Close the connection, which ends this object's sessions (their locks go with it)."""
        self._sessions.clear()
        self._drop()

    def _drop(self) -> None:
        """Close the connection; the next call opens another, and its sessions again."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def describe(self) -> str:
        shown = self._settings.shown
        return shown if "schema=" in shown else f"{shown} (schema {self._schema})"

    @property
    def schema(self) -> str:
        """The schema that holds qw's tables."""
        return self._schema

    def _connection(self) -> Connection:
        """The connection, opened again if it was lost; a new one first takes the locks of
        this object's sessions again (before the call that needed it does anything, a
        take included), so a worker cut off and back is alive again before it takes."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = None
            self._listening.clear()
            conn = self._conn = connect(self._settings)
            for session in self._sessions.values():
                session.held = False
            for session in self._sessions.values():
                sessions.open_session(conn, self._schema, session)
        return conn

    def _open_session(self, session: sessions.Session) -> None:
        """Make this object ``session``'s (a worker it registers, a manager it beats for)."""
        self._sessions[session.name] = session
        sessions.open_session(self._connection(), self._schema, session)

    def _close_session(self, name: str) -> None:
        """End this object's session of ``name``, if it has one (its row was deleted)."""
        session = self._sessions.pop(name, None)
        conn = self._conn
        if session is None or conn is None:
            return
        try:
            sessions.close_session(conn, self._schema, session)
        except psycopg.Error:
            if not (conn.broken or conn.closed):
                raise
            self._drop()  # lost with the connection: so is the lock

    def _error(self, exc: psycopg.Error) -> QwError:
        """The qw error for ``exc``; a connection that is no longer usable is dropped."""
        state = (exc.sqlstate or "")[:2]
        # psycopg makes a program limit (class 54: an index entry too large, say) an
        # OperationalError, as it does a lost connection; but it fails the same way every
        # time, so it is an error, not an outage to wait out.
        lost = isinstance(exc, psycopg.OperationalError) and state != "54"
        outage = lost or state in ("08", "57", "53")
        if exc.sqlstate == "25006":  # read-only transaction: a standby, or a failover under way
            outage = True
        if outage:
            self._drop()
            return unavailable(exc, self._settings.shown)
        return QwError(f"PostgreSQL at {self._settings.shown}: {' '.join(str(exc).split())}")

    def _rows(self, name: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self._connection().execute(self._sql[name], params).fetchall()

    def _column(self, query: str, params: Any = None) -> list[Any]:
        return [row[0] for row in self._connection().execute(query, params)]

    def _listen(self, keys: Sequence[str]) -> None:
        """``LISTEN`` on the channels of ``keys`` (once per connection)."""
        conn = self._connection()
        for key in keys:
            name = channel(self._schema, key)
            if name not in self._listening:
                conn.execute(f'LISTEN "{name}"')
                self._listening.add(name)

    def _wait_notified(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification on a channel listened to."""
        _count_waiting(1)
        try:
            for _ in self._connection().notifies(timeout=timeout, stop_after=1):
                return True
            return False
        finally:
            _count_waiting(-1)

    def _promote(self) -> None:
        self._connection().execute(f"SELECT {self._schema}.promote()")

    def _encode_new(self, job: Job) -> tuple[codec.Row, str, str | None]:
        for name in (job.manager, job.worker, job.queue):
            if name is not None:
                self._check_cached(name)
        return codec.encode(job), _origin(job), job.worker

    def _fail(self, worker: str, failures: Sequence[tuple[Job, Failure]], limits: FailedLimits) -> list[bool]:
        """Move the jobs to the failed registry (the failed run counted), trim it; which
        ``worker`` held. An id given twice is failed once (the first)."""
        if not failures:
            return []
        first: dict[str, tuple[codec.Row, str]] = {}
        for job, failure in failures:
            if job.id not in first:
                counted = attrs.evolve(job, attempts=job.attempts + 1)
                first[job.id] = (codec.encode(counted), codec.encode_failure(failure))
        rows = [row for row, _ in first.values()]
        params = {
            **codec.columns(rows),
            "failure": [text for _, text in first.values()],
            "holder": worker,
            "fallback": _manager_of(worker),
            "max_age": limits.max_age,
            "max_count": limits.max_count,
        }
        conn = self._connection()
        with conn.transaction():
            done = {row[0] for row in conn.execute(self._sql["FAIL"], params).fetchall()}
            if done:
                conn.execute(self._sql["TRIM_FAILED"], params)
        seen: set[str] = set()
        answer = []
        for job, _ in failures:
            answer.append(job.id in done and job.id not in seen)
            seen.add(job.id)
        return answer

    def _recover(
        self,
        manager: str,
        worker: str,
        max_recoveries: int | None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
        *,
        if_dead: bool,
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> Reaped | None:
        """Put back what ``worker`` holds, in one transaction; with ``if_dead``, only if
        its heartbeat is gone or its sessions and its manager's have ended (checked under
        the lock its heartbeat and its session's flag take too).

        :raises psycopg.errors.LockNotAvailable: with ``if_dead``, a lock it needs was held
            longer than :data:`RECOVERY_LOCK_TIMEOUT` (nothing was changed).
        """
        s = self._schema
        conn = self._connection()
        suspected = set(suspects)
        with conn.transaction():
            if if_dead:
                conn.execute(f"SET LOCAL lock_timeout = '{RECOVERY_LOCK_TIMEOUT}'")
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{s}:{worker}"])
            if if_dead:
                alive = conn.execute(
                    f"SELECT 1 FROM {s}.heartbeats WHERE name = %s AND expires > {s}.now_s()", [worker]
                ).fetchone()
                if alive is not None and not sessions.ended(conn, s, manager, worker):
                    return None
            rows = conn.execute(self._sql["HELD_FOR_RECOVERY"], [worker]).fetchall()
            home = f"m:{manager}"
            front: list[tuple[str, str, int, bool]] = []
            back: list[tuple[str, str, int, bool]] = []
            poison: list[tuple[str, str]] = []
            for job_id, origin, recoveries in rows:
                back_to = home if origin == "w" else origin
                count = recoveries
                if max_recoveries is not None and crashed_job in (None, job_id):
                    count += 1
                    if count > max_recoveries:
                        poison.append((job_id, back_to))
                        continue
                (back if origin == "w" else front).append((job_id, back_to, count, job_id in suspected))
            [(base,)] = conn.execute(self._sql["NEXT_POSITION"]).fetchall()
            moved = [
                *((item, -base + n) for n, item in enumerate(front, 1)),
                *((item, base + n) for n, item in enumerate(back, 1)),
            ]
            if moved:
                conn.execute(
                    self._sql["PUT_BACK"],
                    [
                        [item[0] for item, _ in moved],
                        [item[1] for item, _ in moved],
                        [position for _, position in moved],
                        [item[2] for item, _ in moved],
                        [item[3] for item, _ in moved],
                        worker,
                    ],
                )
            if poison:
                self._fail_poison(conn, worker, poison, max_recoveries, limits)
            conn.execute(f"DELETE FROM {s}.heartbeats WHERE name = %s", [worker])
            conn.execute(f"DELETE FROM {s}.workers WHERE manager = %s AND name = %s", [manager, worker])
            conn.execute(f"DELETE FROM {s}.running WHERE worker = %s", [worker])
            woken = sorted({item[1] for item, _ in moved})
            if woken:
                conn.execute(self._sql["NOTIFY"], [woken])
        return Reaped(manager=manager, worker=worker, requeued=len(moved), failed=len(poison))

    def _fail_poison(
        self,
        conn: Connection,
        worker: str,
        poison: list[tuple[str, str]],
        max_recoveries: int | None,
        limits: FailedLimits,
    ) -> None:
        failures = []
        for job_id, _ in poison:
            error = JobCrashed(
                f"worker {worker} died while holding job {job_id}, which had been put back "
                f"{max_recoveries} times already after its worker died"
            )
            log.warning("job %s: %s; moved to the failed jobs", job_id, error)
            failures.append(
                codec.encode_failure(Failure.from_exception(error, worker=worker, kind="crashed"))
            )
        self._fail_held(conn, worker, poison, failures, limits)

    def _fail_held(
        self,
        conn: Connection,
        worker: str,
        held: Sequence[tuple[str, str | None]],
        failures: Sequence[str],
        limits: FailedLimits,
    ) -> bool:
        """Move ``worker``'s held jobs (id, origin: ``None`` keeps the job's own) to the
        failed registry as they are stored, one more attempt counted, with ``failures``
        (encoded), in ``conn``'s open transaction; trim the registry if any moved. Whether
        any did (one no longer held is left alone)."""
        params = {
            "id": [job_id for job_id, _ in held],
            "origin": [origin for _, origin in held],
            "failure": list(failures),
            "holder": worker,
            "max_age": limits.max_age,
            "max_count": limits.max_count,
        }
        moved = bool(conn.execute(self._sql["FAIL_HELD"], params).fetchall())
        if moved:
            conn.execute(self._sql["TRIM_FAILED"], params)
        return moved
