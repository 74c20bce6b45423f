"""The PostgreSQL backend: :class:`PostgresBroker`.

Jobs are rows of ``<schema>.jobs`` (see :mod:`qw_postgres.schema`): queued, delayed, or
held by a worker. Taking is one call of ``<schema>.take()``, a PL/pgSQL function that
deletes the jobs the worker just finished and takes the next ones with ``FOR UPDATE SKIP
LOCKED`` (its own list first, then its manager's queue, then the queues it serves, in
order), so a busy worker spends one round trip per batch, and concurrent workers never
wait for each other's rows.

Waiting. A take that finds nothing listens (``LISTEN``) on the channels of its queues,
its manager's queue and its own, and waits on its connection for a notification; every
statement that makes a job available notifies its queue's channel, which PostgreSQL
delivers when that statement's transaction commits. So an idle worker does not poll, and
a job queued to it starts within milliseconds. The wait is cut at the next delayed job's
due time (the take function says when), and at :data:`SAFETY_POLL` seconds in any case
(a notification lost with a connection costs that much at most).

Liveness is the manager's heartbeat, as on every backend (:mod:`qw_core.liveness`), kept
in ``<schema>.heartbeats`` with expiry times on the database's clock; the reaper's check
that a worker is dead and the move of its jobs are one transaction, serialised with the
heartbeat of the same name by an advisory lock. Session advisory locks (which PostgreSQL
drops with the connection) are not the liveness signal: a worker that is stopped
(SIGSTOP) or stuck keeps its connection, and the contract wants it judged by its
manager's heartbeat, like on Redis.

Transactional enqueue: :meth:`PostgresBroker.queue_jobs` with ``connection=`` (or
:func:`qw_postgres.enqueue`) inserts the jobs with the caller's own connection, inside
the caller's transaction: they are visible, and wake workers, only if it commits.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import attrs
import psycopg

from qw_core.broker import (
    Broker,
    BrokerFactory,
    Capabilities,
    Reaped,
    check_delay,
    check_listed,
    check_minutes,
    check_page,
)
from qw_core.errors import InvalidJob, JobCrashed, QwError, WorkerRunning
from qw_core.models import (
    DEFAULT_QUEUE,
    FailedJob,
    Failure,
    Job,
    JobsRun,
    JobState,
    State,
    TickResult,
    TickState,
    queue_label,
)
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.results import JobResult, check_ttl, decode_value
from qw_core.schedules import check_schedule_id
from qw_core.unique import UNIQUE_META, Queued, unique_of
from qw_postgres import codec, migrate, ticks, uniques
from qw_postgres.connection import Settings, connect, parse_url, unavailable
from qw_postgres.names import check_name
from qw_postgres.schema import BLOCK, LATEST, channel, script
from qw_postgres.sql import queue_params, statements

log = logging.getLogger("qw.postgres")

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: The longest an idle take waits for a notification before it looks again (seconds).
SAFETY_POLL = 30.0
#: Shortest wait worth listening for.
_MIN_WAIT = 0.005
#: Most jobs one queueing statement writes (its positions must stay within one block).
QUEUE_BATCH = 5000
#: Most jobs one statement of a move or a bulk requeue moves.
MOVE_BATCH = 5000
#: Most failed jobs one statement of requeue_all_failed / purge_all_failed handles.
FAILED_BATCH = 500
#: Seconds the per-minute counts of jobs begun are kept (Broker.jobs_run reads an hour at most).
JOBS_RUN_KEEP = 2 * 3600

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


def _translated(
    method: Callable[Concatenate[PostgresBroker, _P], _R],
) -> Callable[Concatenate[PostgresBroker, _P], _R]:
    """Turn psycopg's errors into qw's: a lost or refused connection is an outage
    (:class:`~qw_core.errors.BrokerUnavailable`, the connection dropped so the next call
    opens a new one); any other database error is a :class:`QwError` of one line."""

    @functools.wraps(method)
    def wrapper(self: PostgresBroker, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
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
    """The origin of ``worker``'s manager's queue, by the ``<manager>.<pid>`` convention."""
    head, dot, _ = worker.rpartition(".")
    return f"m:{head if dot and head else worker}"


@attrs.frozen
class PostgresBrokerFactory:
    """Opens a :class:`PostgresBroker` on the same URL (picklable, for worker processes).

    The schema was checked by the broker that made this factory, so the brokers it opens
    do not check it again.
    """

    url: str | None

    def __call__(self) -> PostgresBroker:
        return PostgresBroker.open(self.url, check_schema=False)

    def __repr__(self) -> str:
        return f"PostgresBrokerFactory({parse_url(self.url).shown!r})"


class PostgresBroker(Broker):
    """Jobs in PostgreSQL (``qw run --backend postgres --url postgresql://...``).

    One object holds one connection, in autocommit mode, opened again after it is lost
    (each call after an outage tries once, and raises
    :class:`~qw_core.errors.BrokerUnavailable` while the server is away).
    """

    capabilities = Capabilities(
        multi_host=True,
        max_take=100,
        delayed=True,
        schedules=True,
        migrations=True,
        throughput=True,
        unique=True,
    )

    def __init__(self, settings: Settings, conn: Connection | None = None, *, url: str | None = None) -> None:
        self._settings = settings
        self._schema = settings.schema
        self._sql = statements(settings.schema)
        self._conn = conn
        self._url = url
        self._listening: set[str] = set()
        self._names: set[str] = set()
        self._swept_to = ""  # where the next sweep of unique keys starts (see qw_postgres.uniques)

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str | None = None) -> PostgresBroker:
        """Open the PostgreSQL database at ``url``, creating or upgrading qw's schema in it
        unless the URL says ``migrate=false``.

        ``postgresql://user:password@host:5432/dbname?schema=NAME`` (``schema``: where qw's
        tables are, default ``qw``; other settings are libpq's, such as ``sslmode``).
        Default: libpq's defaults (the ``PG*`` environment variables, else the local
        server). Give a password through ``QW_URL`` or ``~/.pgpass``, not on a command line.

        :raises ConfigurationError: the URL is malformed, or the schema is newer than this
            code (or missing with ``migrate=false``).
        :raises BrokerUnavailable: PostgreSQL does not answer, refuses the login, or has no
            such database.
        """
        return cls.open(url, check_schema=True)

    @classmethod
    def open(cls, url: str | None, *, check_schema: bool) -> PostgresBroker:
        """:meth:`from_url`; ``check_schema=False`` trusts that the schema is ready."""
        settings = parse_url(url)
        conn = connect(settings)
        broker = cls(settings, conn, url=url)
        if check_schema:
            try:
                migrate.ensure(conn, settings.schema, settings.shown, allowed=settings.migrate)
            except psycopg.Error as exc:
                conn.close()
                raise broker._error(exc) from exc
            except BaseException:
                conn.close()
                raise
        return broker

    @classmethod
    def apply_migrations(cls, url: str | None = None) -> list[str]:
        """See :meth:`Broker.apply_migrations`: the migrations the schema at ``url`` lacks,
        applied in one transaction under the migration lock (:mod:`qw_postgres.migrate`)."""
        settings = parse_url(url)
        conn = connect(settings)
        try:
            done = migrate.apply(conn, settings.schema, settings.shown)
        except psycopg.Error as exc:
            raise PostgresBroker(settings)._error(exc) from exc
        finally:
            conn.close()
        return [f"schema {settings.schema}: applied version {m.version} ({m.description})" for m in done]

    @classmethod
    def migration_script(cls, url: str | None = None) -> str:
        """See :meth:`Broker.migration_script`: the SQL that brings the schema at ``url``
        from the version it has to this code's, each migration in its own transaction."""
        settings = parse_url(url)
        conn = connect(settings)
        try:
            version = migrate.current_version(conn, settings.schema)
            migrate.check_version(version, settings.schema, settings.shown)
        except psycopg.Error as exc:
            raise PostgresBroker(settings)._error(exc) from exc
        finally:
            conn.close()
        return script(settings.schema, version) if version < LATEST else ""

    def factory(self) -> BrokerFactory:
        return PostgresBrokerFactory(url=self._url)

    def check_name(self, name: str) -> str:
        return check_name(name)

    def _check_cached(self, name: str) -> None:
        if name not in self._names:
            self._names.add(check_name(name))

    def close(self) -> None:
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

    # -- the connection ------------------------------------------------------------------------

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = None
            self._listening.clear()
            conn = self._conn = connect(self._settings)
        return conn

    def _error(self, exc: psycopg.Error) -> QwError:
        """The qw error for ``exc``; a connection that is no longer usable is dropped."""
        outage = isinstance(exc, psycopg.OperationalError) or (exc.sqlstate or "")[:2] in ("08", "57", "53")
        if exc.sqlstate == "25006":  # read-only transaction: a standby, or a failover under way
            outage = True
        if outage:
            self.close()
            return unavailable(exc, self._settings.shown)
        return QwError(f"PostgreSQL at {self._settings.shown}: {' '.join(str(exc).split())}")

    def _rows(self, name: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self._connection().execute(self._sql[name], params).fetchall()

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

    # -- producing -----------------------------------------------------------------------------

    def queue_jobs(
        self,
        jobs: Sequence[Job],
        *,
        delay: float = 0.0,
        at: float | None = None,
        connection: Connection | None = None,
    ) -> list[str]:
        """See :meth:`Broker.queue_jobs`.

        :param connection: a psycopg connection of the caller's to queue with, inside its
            open transaction (if it has one): the jobs exist, and wake workers, only if that
            transaction commits. Nothing is committed here.
        """
        if any(job.meta and UNIQUE_META in job.meta for job in jobs):
            done = self.queue_jobs_unique(jobs, delay=delay, at=at, connection=connection)
            return [queued.id for queued in done]
        waits = check_delay(jobs, delay, at)
        rows = [self._encode_new(job) for job in jobs]
        if connection is not None:
            insert(connection, self._schema, rows, waits=waits, delay=delay, at=at)
        else:
            self._insert(rows, waits, delay, at)
        return [job.id for job in jobs]

    def queue_jobs_unique(
        self,
        jobs: Sequence[Job],
        *,
        delay: float = 0.0,
        at: float | None = None,
        connection: Connection | None = None,
    ) -> list[Queued]:
        """See :meth:`Broker.queue_jobs_unique`: one statement per batch takes the keys
        (``<schema>.claim_uniques()``) and stores the jobs that took theirs
        (:mod:`qw_postgres.uniques`).

        :param connection: as for :meth:`queue_jobs`: the keys are taken, and the jobs
            stored, in the caller's transaction; another producer of the same key waits
            until it ends.
        """
        waits = check_delay(jobs, delay, at)
        staged = [(*self._encode_new(job), unique_of(job)) for job in jobs]
        if connection is not None:
            return uniques.queue(
                connection, self._schema, staged, waits=waits, delay=delay, at=at, batch=QUEUE_BATCH
            )
        return self._insert_unique(staged, waits, delay, at)

    @_translated
    def _insert(
        self, rows: list[tuple[codec.Row, str, str | None]], waits: bool, delay: float, at: float | None
    ) -> None:
        insert(self._connection(), self._schema, rows, waits=waits, delay=delay, at=at)

    @_translated
    def _insert_unique(
        self, staged: list[uniques.Staged], waits: bool, delay: float, at: float | None
    ) -> list[Queued]:
        return uniques.queue(
            self._connection(), self._schema, staged, waits=waits, delay=delay, at=at, batch=QUEUE_BATCH
        )

    def _encode_new(self, job: Job) -> tuple[codec.Row, str, str | None]:
        for name in (job.manager, job.worker, job.queue):
            if name is not None:
                self._check_cached(name)
        return codec.encode(job), _origin(job), job.worker

    # -- consuming -----------------------------------------------------------------------------

    @_translated
    def take(
        self,
        *,
        manager: str,
        worker: str,
        finished: Sequence[str] = (),
        held: Sequence[str] = (),
        limit: int = 1,
        timeout: float = 0.0,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        keep_finished: float = 0.0,
    ) -> list[Job]:
        self._check_cached(manager)
        self._check_cached(worker)
        keep = check_ttl(keep_finished)
        served = self._served(queues)
        limit = max(0, min(limit, self.capabilities.max_take))
        deadline = time.monotonic() + timeout
        waits = limit > 0 and timeout >= _MIN_WAIT
        if waits:
            self._listen([f"w:{worker}", f"m:{manager}", *served])
        jobs, nudged, due_in = self._take_once(manager, worker, served, finished, held, limit, waits, keep)
        while waits and not jobs and not nudged:
            remaining = deadline - time.monotonic()
            if remaining < _MIN_WAIT:
                return []
            wait = min(remaining, SAFETY_POLL)
            if due_in is not None:
                wait = min(wait, max(due_in, 0.0))
            if wait > 0:
                self._wait_notified(wait)
            jobs, nudged, due_in = self._take_once(manager, worker, served, (), held, limit, True, 0.0)
        return jobs

    def _served(self, queues: Sequence[str]) -> list[str]:
        served = []
        for queue in queues:
            if queue == DEFAULT_QUEUE:
                served.append("default")
            else:
                self._check_cached(queue)
                served.append(f"q:{queue}")
        return served

    def _take_once(  # noqa: PLR0917 - the take function's own parameters
        self,
        manager: str,
        worker: str,
        served: list[str],
        finished: Sequence[str],
        held: Sequence[str],
        limit: int,
        waits: bool,
        keep: float,
    ) -> tuple[list[Job], bool, float | None]:
        """One call of ``take()``: the jobs, whether a nudge ended the wait, and in how
        many seconds the next delayed job of these queues is due."""
        rows = self._rows("TAKE", [worker, manager, served, list(finished), list(held), limit, waits, keep])
        taken = sorted((row for row in rows if row[0] is not None), key=lambda row: row[9])
        info = next((row for row in rows if row[0] is None), None)
        jobs = []
        for row in taken:
            try:
                jobs.append(codec.decode(*row[:8], suspect=bool(row[8])))
            except InvalidJob as exc:  # written by hand: failed, never run with data it was not queued with
                log.warning("job %s is unreadable, moved to the failed jobs: %s", row[0], exc)
                self._fail_unreadable(worker, manager, row, exc)
        if info is None:
            return jobs, False, None
        return jobs, bool(info[11]), info[10]

    def _fail_unreadable(self, worker: str, manager: str, row: tuple[Any, ...], error: InvalidJob) -> None:
        job = Job(id=row[0], data=None, manager=row[3], worker=row[4], queue=row[5], attempts=row[6] or 0)
        failure = Failure.from_exception(error, worker=worker, kind="invalid")
        self._fail(worker, [(job, failure)], DEFAULT_FAILED_LIMITS, attempts=job.attempts)

    @_translated
    def nudge(self, worker: str) -> None:
        """See :meth:`Broker.nudge`: a row in ``nudges`` (which the worker's next waiting
        take deletes) and a notification on the worker's channel."""
        self._check_cached(worker)
        self._rows("NUDGE", {"worker": worker})

    @_translated
    def still_held(self, *, worker: str, job_ids: Sequence[str]) -> list[bool]:
        if not job_ids:
            return []
        rows = self._connection().execute(
            f"SELECT id FROM {self._schema}.jobs WHERE id = ANY (%s) AND state = 'held' AND holder = %s",
            [list(job_ids), worker],
        )
        held = {row[0] for row in rows}
        return [job_id in held for job_id in job_ids]

    @_translated
    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        keep = check_ttl(keep_finished)
        if not job_ids:
            return []
        done = {
            row[0] for row in self._rows("FINISH", {"ids": list(job_ids), "worker": worker, "keep": keep})
        }
        return [job_id in done for job_id in job_ids]

    @_translated
    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        check_ttl(ttl)
        rows = self._rows("FINISH_RESULT", {"id": job_id, "worker": worker, "value": result, "ttl": ttl})
        return bool(rows)

    @_translated
    def get_result(self, job_id: str) -> JobResult | None:
        rows = self._rows("RESULT", [job_id])
        if not rows:
            return None
        value, finished_at, worker = rows[0]
        return JobResult(job_id=job_id, value=decode_value(value), finished_at=finished_at, worker=worker)

    @_translated
    def wait_result(self, job_id: str, timeout: float) -> JobResult | None:
        """See :meth:`Broker.wait_result`: ``LISTEN`` on the job's result channel first,
        then read; a notification wakes the wait."""
        key = channel(self._schema, f"r:{job_id}")
        conn = self._connection()
        conn.execute(f'LISTEN "{key}"')
        try:
            deadline = time.monotonic() + max(0.0, timeout)
            while (found := self.get_result(job_id)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._wait_notified(min(remaining, SAFETY_POLL))
            return found
        finally:
            if not conn.closed and not conn.broken:
                conn.execute(f'UNLISTEN "{key}"')

    # -- settling ------------------------------------------------------------------------------

    @_translated
    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        [done] = self._fail(worker, [(job, failure)], limits)
        return done

    @_translated
    def fail_jobs(
        self,
        *,
        worker: str,
        failures: Sequence[tuple[Job, Failure]],
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[bool]:
        return self._fail(worker, failures, limits)

    def _fail(
        self,
        worker: str,
        failures: Sequence[tuple[Job, Failure]],
        limits: FailedLimits,
        *,
        attempts: int | None = None,
    ) -> list[bool]:
        """Move the jobs to the failed registry (the failed run counted), trim it; which
        ``worker`` held. An id given twice is failed once (the first)."""
        if not failures:
            return []
        first: dict[str, tuple[codec.Row, str]] = {}
        for job, failure in failures:
            if job.id not in first:
                counted = attrs.evolve(job, attempts=job.attempts + 1 if attempts is None else attempts + 1)
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

    @_translated
    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        row = codec.encode(attrs.evolve(job, attempts=job.attempts + 1))
        params = {
            **attrs.asdict(row),
            "delay": max(0.0, delay),
            "holder": worker,
            "fallback": _manager_of(worker),
        }
        return bool(self._rows("RETRY", params))

    @_translated
    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        params = {"ids": list(dict.fromkeys(job_ids)), "worker": worker, "fallback": _manager_of(worker)}
        [(count, _)] = self._rows("RELEASE", params)
        return int(count)

    @_translated
    def recover_worker(
        self,
        *,
        manager: str,
        worker: str,
        max_recoveries: int | None = None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> int:
        self._check_cached(manager)
        self._check_cached(worker)
        reaped = self._recover(
            manager, worker, max_recoveries, crashed_job, suspects, if_dead=False, limits=limits
        )
        return 0 if reaped is None else reaped.requeued

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
        its heartbeat is gone (checked under the lock its heartbeat takes too)."""
        s = self._schema
        conn = self._connection()
        suspected = set(suspects)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{s}:{worker}"])
            if if_dead:
                alive = conn.execute(
                    f"SELECT 1 FROM {s}.heartbeats WHERE name = %s AND expires > {s}.now_s()", [worker]
                ).fetchone()
                if alive is not None:
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
        params = {
            "id": [job_id for job_id, _ in poison],
            "origin": [origin for _, origin in poison],
            "failure": failures,
            "holder": worker,
            "max_age": limits.max_age,
            "max_count": limits.max_count,
        }
        conn.execute(self._sql["FAIL_HELD"], params)
        conn.execute(self._sql["TRIM_FAILED"], params)

    # -- liveness ------------------------------------------------------------------------------

    @_translated
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
        rows = self._rows("BEAT", [names, tokens, float(ttl), shown])
        return dict(rows)

    @_translated
    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        s = self._schema
        row = (
            self._connection()
            .execute(f"SELECT token, expires - {s}.now_s() FROM {s}.heartbeats WHERE name = %s", [name])
            .fetchone()
        )
        if row is None or row[1] <= 0:
            return None
        return str(row[0]), float(row[1])

    @_translated
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
        the server started less than ``ttl`` seconds ago (``pg_postmaster_start_time``):
        heartbeats may have lapsed while it was down."""
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
            f"SELECT {s}.now_s() - extract(epoch FROM pg_postmaster_start_time())::double precision"
        ).fetchall()
        if uptime < ttl:
            return None
        dead = conn.execute(
            f"SELECT w.manager, w.name FROM {s}.workers w JOIN {s}.managers m ON m.name = w.manager "
            f"WHERE m.beats AND NOT EXISTS (SELECT 1 FROM {s}.heartbeats h WHERE h.name = w.name "
            f"AND h.expires > {s}.now_s()) ORDER BY w.manager, w.name"
        ).fetchall()
        reaped = []
        for manager, worker in dead:
            try:
                check_name(manager)
                check_name(worker)
            except QwError:
                continue
            done = self._recover(manager, worker, max_recoveries, if_dead=True, limits=limits)
            if done is not None:
                reaped.append(done)
        conn.execute(
            f"DELETE FROM {s}.managers m WHERE m.beats "
            f"AND NOT EXISTS (SELECT 1 FROM {s}.heartbeats h "
            f"WHERE h.name = m.name AND h.expires > {s}.now_s()) "
            f"AND NOT EXISTS (SELECT 1 FROM {s}.workers w WHERE w.manager = m.name)"
        )
        self._sweep()
        self._swept_to = uniques.sweep(conn, s, self._swept_to)
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

    # -- periodic jobs (qw_postgres.ticks) -----------------------------------------------------

    @_translated
    def now(self) -> float:
        """See :meth:`Broker.now`: the database's clock (``clock_timestamp()``)."""
        return ticks.now(self._connection(), self._schema)

    @_translated
    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        """See :meth:`Broker.enqueue_tick`: one statement (``record_tick()`` and the job's insert)."""
        self._check_cached(manager)
        check_schedule_id(schedule_id)
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

    @_translated
    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        """See :meth:`Broker.declare_schedules`: one statement."""
        self._check_cached(manager)
        return ticks.declare(
            self._connection(), self._schema, manager=manager, declarations=declarations, ttl=ttl
        )

    @_translated
    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        """See :meth:`Broker.schedule_declarations`."""
        return ticks.declarations(self._connection(), self._schema)

    @_translated
    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        """See :meth:`Broker.tick_states`."""
        return ticks.states(self._connection(), self._schema, schedule_ids)

    # -- membership ----------------------------------------------------------------------------

    @_translated
    def register_manager(self, name: str) -> None:
        self._check_cached(name)
        self._connection().execute(
            f"INSERT INTO {self._schema}.managers (name) VALUES (%s) ON CONFLICT DO NOTHING", [name]
        )

    @_translated
    def deregister_manager(self, name: str) -> None:
        self._check_cached(name)
        s = self._schema
        conn = self._connection()
        with conn.transaction():
            conn.execute(f"DELETE FROM {s}.managers WHERE name = %s", [name])
            conn.execute(f"DELETE FROM {s}.heartbeats WHERE name = %s", [name])

    @_translated
    def register_worker(self, *, manager: str, worker: str) -> None:
        self._check_cached(manager)
        self._check_cached(worker)
        self._connection().execute(
            f"INSERT INTO {self._schema}.workers (manager, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [manager, worker],
        )

    @_translated
    def deregister_worker(self, *, manager: str, worker: str) -> None:
        self._check_cached(manager)
        self._check_cached(worker)
        s = self._schema
        conn = self._connection()
        with conn.transaction():
            conn.execute(f"DELETE FROM {s}.workers WHERE manager = %s AND name = %s", [manager, worker])
            conn.execute(f"DELETE FROM {s}.heartbeats WHERE name = %s", [worker])

    # -- read-only queries ---------------------------------------------------------------------

    @_translated
    def managers(self) -> list[str]:
        return self._column(f"SELECT name FROM {self._schema}.managers ORDER BY name")

    @_translated
    def workers(self, manager: str) -> list[str]:
        return self._column(
            f"SELECT name FROM {self._schema}.workers WHERE manager = %s ORDER BY name", [manager]
        )

    def _column(self, query: str, params: Any = None) -> list[Any]:
        return [row[0] for row in self._connection().execute(query, params)]

    def _listed(self, manager: str | None, queue: str | None) -> str:
        manager, queue = check_listed(manager, queue)
        if manager is not None:
            self._check_cached(manager)
            return f"m:{manager}"
        if queue is not None:
            self._check_cached(queue)
            return f"q:{queue}"
        return "default"

    def _promote(self) -> None:
        self._connection().execute(f"SELECT {self._schema}.promote()")

    @_translated
    def note_jobs_run(self, *, manager: str, count: int) -> None:
        """See :meth:`Broker.note_jobs_run`: one upsert into ``jobs_run`` on the database's
        minute, which also deletes the minutes older than :data:`JOBS_RUN_KEEP` seconds."""
        super().note_jobs_run(manager=manager, count=count)
        self._check_cached(manager)
        if count:
            params = {"manager": manager, "count": count, "keep": JOBS_RUN_KEEP}
            self._connection().execute(self._sql["NOTE_JOBS_RUN"], params)

    @_translated
    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        """See :meth:`Broker.jobs_run`: the last ``minutes`` minutes of ``jobs_run``, by the
        database's clock, one entry per minute."""
        check_minutes(minutes)
        rows = self._rows("JOBS_RUN", {"span": 60 * minutes})
        now = int(rows[0][0])
        counts: dict[int, dict[str, int]] = {now - 60 * i: {} for i in range(minutes)}
        for _, minute, manager, count in rows:
            if minute is not None and int(minute) in counts:
                counts[int(minute)][manager] = int(count)
        return [JobsRun(minute=minute, counts=counts[minute]) for minute in sorted(counts)]

    @_translated
    def queued_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.queued_job_ids`; delayed jobs that are due are moved first."""
        check_page(offset, limit)
        origin = self._listed(manager, queue)
        self._promote()
        return self._column(
            f"SELECT id FROM {self._schema}.jobs WHERE state = 'queued' AND origin = %s "
            "ORDER BY position OFFSET %s LIMIT %s",
            [origin, offset, limit],
        )

    @_translated
    def queued_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        origin = self._listed(manager, queue)
        self._promote()
        [count] = self._column(
            f"SELECT count(*) FROM {self._schema}.jobs WHERE state = 'queued' AND origin = %s", [origin]
        )
        return int(count)

    @_translated
    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        check_page(offset, limit)
        return self._column(
            f"SELECT id FROM {self._schema}.jobs WHERE state = 'held' AND holder = %s "
            "ORDER BY position OFFSET %s LIMIT %s",
            [worker, offset, limit],
        )

    @_translated
    def held_count(self, worker: str) -> int:
        [count] = self._column(
            f"SELECT count(*) FROM {self._schema}.jobs WHERE state = 'held' AND holder = %s", [worker]
        )
        return int(count)

    @_translated
    def delayed_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        check_page(offset, limit)
        origin = self._listed(manager, queue)
        return self._column(
            f"SELECT id FROM {self._schema}.jobs WHERE state = 'delayed' AND origin = %s "
            "ORDER BY due, position OFFSET %s LIMIT %s",
            [origin, offset, limit],
        )

    @_translated
    def delayed_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        origin = self._listed(manager, queue)
        [count] = self._column(
            f"SELECT count(*) FROM {self._schema}.jobs WHERE state = 'delayed' AND origin = %s", [origin]
        )
        return int(count)

    @_translated
    def named_queues(self) -> list[str]:
        return self._column(f"SELECT name FROM {self._schema}.queues ORDER BY name")

    @_translated
    def get_job(self, job_id: str) -> Job | None:
        s = self._schema
        for table in ("jobs", "failed"):
            row = (
                self._connection()
                .execute(f"SELECT {codec.JOB_COLUMNS} FROM {s}.{table} WHERE id = %s", [job_id])
                .fetchone()
            )
            if row is not None:
                return codec.decode(*row)
        return None

    @_translated
    def job_status(self, job_id: str) -> JobState:
        rows = self._rows("STATUS", {"id": job_id})
        for row in sorted(rows, key=lambda row: row[0] != "failed"):
            kind = row[0]
            job = codec.decode(*row[1:9])
            label = queue_label(job)
            if kind == "failed":
                failed = codec.decode_failed([*row[1:9], row[9], row[10]])
                failure = failed.failure
                return JobState(
                    job_id=job_id,
                    state=State.FAILED,
                    job=job,
                    queue=label,
                    worker=failure.worker,
                    failure=failure,
                )
            holder, origin, due, since = row[11:15]
            if kind == "held" and origin != "w":
                return JobState(
                    job_id=job_id, state=State.HELD, job=job, queue=label, worker=holder, since=since
                )
            if kind == "delayed":
                return JobState(job_id=job_id, state=State.DELAYED, job=job, queue=label, due_at=due)
            return JobState(job_id=job_id, state=State.QUEUED, job=job, queue=label)
        return self._ended_state(job_id)

    def _ended_state(self, job_id: str) -> JobState:
        """The state of a job that is no longer stored: succeeded while remembered, else unknown."""
        found = self.get_result(job_id)
        if found is not None:
            return JobState(
                job_id=job_id,
                state=State.SUCCEEDED,
                worker=found.worker,
                result=found,
                finished_at=found.finished_at,
            )
        noted = self._rows("FINISHED_AT", [job_id])
        if noted:
            return JobState(job_id=job_id, state=State.SUCCEEDED, finished_at=noted[0][0])
        return JobState(job_id=job_id, state=State.UNKNOWN)

    @_translated
    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        rows = self._connection().execute(
            f"SELECT {codec.JOB_COLUMNS}, failure::text, failed_at FROM {self._schema}.failed "
            "ORDER BY position DESC LIMIT %s",
            [max(0, limit)],
        )
        return [codec.decode_failed(row) for row in rows]

    @_translated
    def failed_count(self) -> int:
        [count] = self._column(f"SELECT count(*) FROM {self._schema}.failed")
        return int(count)

    @_translated
    def get_failed(self, job_id: str) -> FailedJob | None:
        row = (
            self._connection()
            .execute(
                f"SELECT {codec.JOB_COLUMNS}, failure::text, failed_at "
                f"FROM {self._schema}.failed WHERE id = %s",
                [job_id],
            )
            .fetchone()
        )
        return None if row is None else codec.decode_failed(row)

    @_translated
    def job_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        s = self._schema
        pattern = _like_prefix(prefix)
        return self._column(
            f"SELECT DISTINCT id FROM (SELECT id FROM {s}.jobs WHERE id LIKE %(p)s "
            f"UNION ALL SELECT id FROM {s}.failed WHERE id LIKE %(p)s "
            f"UNION ALL SELECT id FROM {s}.results WHERE id LIKE %(p)s AND expires > {s}.now_s() "
            f"UNION ALL SELECT id FROM {s}.finished WHERE id LIKE %(p)s AND expires > {s}.now_s()) found "
            "LIMIT %(n)s",
            {"p": pattern, "n": max(0, limit)},
        )

    @_translated
    def failed_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        return self._column(
            f"SELECT id FROM {self._schema}.failed WHERE id LIKE %s LIMIT %s",
            [_like_prefix(prefix), max(0, limit)],
        )

    @_translated
    def requeue_failed(self, job_id: str) -> bool:
        return bool(self._rows("REQUEUE_FAILED", {"ids": [job_id]}))

    @_translated
    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        s = self._schema
        if job_ids is None:
            return self.purge_all_failed()
        cursor = self._connection().execute(
            f"DELETE FROM {s}.failed WHERE id = ANY (%s)", [list(dict.fromkeys(job_ids))]
        )
        return cursor.rowcount

    @_translated
    def purge_all_failed(self, *, progress: Callable[[int], None] | None = None) -> int:
        """See :meth:`Broker.purge_all_failed`: :data:`FAILED_BATCH` a statement."""
        s = self._schema
        conn = self._connection()
        [(last,)] = conn.execute(f"SELECT max(position) FROM {s}.failed").fetchall()
        purged = 0
        while last is not None:
            count = conn.execute(
                f"DELETE FROM {s}.failed WHERE id IN (SELECT id FROM {s}.failed WHERE position <= %s "
                "ORDER BY position LIMIT %s)",
                [last, FAILED_BATCH],
            ).rowcount
            if count == 0:
                break
            purged += count
            if progress is not None:
                progress(count)
        return purged

    @_translated
    def requeue_all_failed(self, *, progress: Callable[[Sequence[str]], None] | None = None) -> int:
        """See :meth:`Broker.requeue_all_failed`: pages of :data:`FAILED_BATCH` ids up to the
        newest failure when called, each requeued by one statement."""
        s = self._schema
        conn = self._connection()
        [(last,)] = conn.execute(f"SELECT max(position) FROM {s}.failed").fetchall()
        after: int | None = None
        requeued = 0
        while last is not None:
            page = conn.execute(
                f"SELECT id, position FROM {s}.failed WHERE position <= %s AND (%s::bigint IS NULL "
                "OR position > %s) ORDER BY position LIMIT %s",
                [last, after, after, FAILED_BATCH],
            ).fetchall()
            if not page:
                break
            after = page[-1][1]
            done = {row[0] for row in self._rows("REQUEUE_FAILED", {"ids": [row[0] for row in page]})}
            ids = [row[0] for row in page if row[0] in done]
            requeued += len(ids)
            if progress is not None:
                progress(ids)
        return requeued

    # -- strays --------------------------------------------------------------------------------

    @_translated
    def stray_queues(self) -> dict[str, int]:
        s = self._schema
        self._promote()
        rows = (
            self._connection()
            .execute(
                f"SELECT substr(origin, 3), count(*) FROM {s}.jobs "
                "WHERE state = 'queued' AND left(origin, 2) = 'm:' GROUP BY origin "
                f"UNION ALL SELECT holder, count(*) FROM {s}.jobs WHERE state = 'held' GROUP BY holder"
            )
            .fetchall()
        )
        found: dict[str, int] = {}
        for name, count in rows:
            found[name] = found.get(name, 0) + int(count)
        return {name: count for name, count in sorted(found.items()) if not self._running(name)}

    def _running(self, name: str) -> bool:
        s = self._schema
        row = (
            self._connection()
            .execute(
                f"SELECT EXISTS (SELECT 1 FROM {s}.managers WHERE name = %(n)s), "
                f"EXISTS (SELECT 1 FROM {s}.workers WHERE name = %(n)s), "
                f"EXISTS (SELECT 1 FROM {s}.heartbeats WHERE name = %(n)s AND expires > {s}.now_s())",
                {"n": name},
            )
            .fetchone()
        )
        manager, worker, beating = row or (False, False, False)
        return bool(manager or worker or (beating and not manager))

    def _worker_running(self, name: str) -> bool:
        s = self._schema
        row = (
            self._connection()
            .execute(
                f"SELECT EXISTS (SELECT 1 FROM {s}.workers WHERE name = %(n)s), "
                f"EXISTS (SELECT 1 FROM {s}.managers WHERE name = %(n)s), "
                f"EXISTS (SELECT 1 FROM {s}.heartbeats WHERE name = %(n)s AND expires > {s}.now_s())",
                {"n": name},
            )
            .fetchone()
        )
        worker, manager, beating = row or (False, False, False)
        return bool(worker or (beating and not manager))

    @_translated
    def move_queued(self, name: str, *, to: str | None = None) -> int:
        """See :meth:`Broker.move_queued`: the queue, then the list, in batches of
        :data:`MOVE_BATCH` rows, each to the back of ``to``'s queue in order."""
        self._check_cached(name)
        if to is not None:
            self._check_cached(to)
        s = self._schema
        conn = self._connection()
        held = conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {s}.jobs WHERE state = 'held' AND holder = %s)", [name]
        )
        [(has_held,)] = held.fetchall()
        if has_held and self._worker_running(name):
            raise WorkerRunning(f"worker {name} is running: the jobs on its list are its own")
        target = "default" if to is None else f"m:{to}"
        moved = 0
        for where in ("state = 'queued' AND origin = %(from)s", "state = 'held' AND holder = %(name)s"):
            while True:
                count = conn.execute(
                    f"WITH c AS (SELECT id, position FROM {s}.jobs WHERE {where} ORDER BY position "
                    f"LIMIT {MOVE_BATCH} FOR UPDATE SKIP LOCKED), "
                    "r AS (SELECT c.id, row_number() OVER (ORDER BY c.position) AS rn FROM c), "
                    f"b AS (SELECT nextval('{s}.positions') * {BLOCK} AS base), "
                    f"u AS (UPDATE {s}.jobs j SET state = 'queued', holder = NULL, origin = %(to)s, "
                    "position = b.base + r.rn FROM r CROSS JOIN b WHERE j.id = r.id RETURNING j.id) "
                    f"SELECT count(*), (SELECT count(*) FROM (SELECT pg_notify({s}.channel(%(to)s), '') "
                    "WHERE EXISTS (SELECT 1 FROM u)) n) FROM u",
                    {"from": f"m:{name}", "name": name, "to": target},
                ).fetchall()[0][0]
                moved += int(count)
                if count < MOVE_BATCH:
                    break
        return moved


def _like_prefix(prefix: str) -> str:
    """A ``LIKE`` pattern matching text that starts with ``prefix``, taken literally."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def insert(
    conn: Connection,
    schema: str,
    rows: Sequence[tuple[codec.Row, str, str | None]],
    *,
    waits: bool,
    delay: float,
    at: float | None,
) -> None:
    """Insert encoded jobs (row, origin, worker) with ``conn``, in batches of
    :data:`QUEUE_BATCH`, notifying their queues; commits nothing itself."""
    query = statements(schema)["QUEUE"]
    for start in range(0, len(rows), QUEUE_BATCH):
        conn.execute(query, queue_params(rows[start : start + QUEUE_BATCH], waits=waits, delay=delay, at=at))


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
