"""A worker's session: the :class:`~qw_core.broker.Consumer` role of the PostgreSQL broker.

Taking is one call of ``<schema>.take()``, a PL/pgSQL function that deletes the jobs the
worker just finished and takes the next ones with ``FOR UPDATE SKIP LOCKED`` (its own
list first, then its manager's queue, then the queues it serves, in order), so a busy
worker spends one round trip per batch, and concurrent workers never wait for each
other's rows. One part of :class:`~qw_postgres.broker.PostgresBroker`, over the
connection of :mod:`qw_postgres.base`.

Waiting. A take that finds nothing listens (``LISTEN``) on the channels of its queues,
its manager's queue and its own, and waits on its connection for a notification; every
statement that makes a job available notifies its queue's channel, which PostgreSQL
delivers when that statement's transaction commits. So an idle worker does not poll, and
a job queued to it starts within milliseconds. The wait is cut at the next delayed job's
due time (the take function says when), and at :data:`~qw_postgres.base.SAFETY_POLL`
seconds in any case (a notification lost with a connection costs that much at most).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import attrs

from qw_core.errors import InvalidJob
from qw_core.models import DEFAULT_QUEUE, Failure, Job
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.results import check_ttl
from qw_postgres import codec, sessions
from qw_postgres.base import SAFETY_POLL, PostgresBase, _manager_of, log, translated

#: Shortest wait worth listening for.
_MIN_WAIT = 0.005


class ConsumerPart(PostgresBase):
    """The consuming methods of :class:`~qw_postgres.broker.PostgresBroker`."""

    @translated
    def register_worker(self, *, manager: str, worker: str) -> None:
        """See :meth:`Broker.register_worker`: this object becomes the worker's session,
        holding its lock (:mod:`qw_postgres.sessions`), unless the URL says
        ``liveness=heartbeats``."""
        self._check_cached(manager)
        self._check_cached(worker)
        if not self.capabilities.session_liveness:
            sessions.register_worker(self._connection(), self._schema, manager, worker)
            return
        session = self._sessions.get(worker)
        if session is None or session.manager != manager:
            session = sessions.Session(manager=manager, worker=worker)
        self._open_session(session)

    @translated
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
                self._fail_unreadable(worker, row[0], exc)
        if info is None:
            return jobs, False, None
        return jobs, bool(info[11]), info[10]

    def _fail_unreadable(self, worker: str, job_id: str, error: InvalidJob) -> None:
        """Move the held job ``job_id`` to the failed registry (kind ``invalid``, its run
        counted) with its stored text as it is, not the job as read: a requeue once it is
        mended runs it with the data it was written with, never with none."""
        failure = codec.encode_failure(Failure.from_exception(error, worker=worker, kind="invalid"))
        conn = self._connection()
        with conn.transaction():  # origin None: where it was taken from
            self._fail_held(conn, worker, [(job_id, None)], [failure], DEFAULT_FAILED_LIMITS)

    @translated
    def nudge(self, worker: str) -> None:
        """See :meth:`Broker.nudge`: a row in ``nudges`` (which the worker's next waiting
        take deletes) and a notification on the worker's channel."""
        self._check_cached(worker)
        self._rows("NUDGE", {"worker": worker})

    @translated
    def still_held(self, *, worker: str, job_ids: Sequence[str]) -> list[bool]:
        if not job_ids:
            return []
        rows = self._connection().execute(
            f"SELECT id FROM {self._schema}.jobs WHERE id = ANY (%s) AND state = 'held' AND holder = %s",
            [list(job_ids), worker],
        )
        held = {row[0] for row in rows}
        return [job_id in held for job_id in job_ids]

    @translated
    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        keep = check_ttl(keep_finished)
        if not job_ids:
            return []
        done = {
            row[0] for row in self._rows("FINISH", {"ids": list(job_ids), "worker": worker, "keep": keep})
        }
        return [job_id in done for job_id in job_ids]

    @translated
    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        check_ttl(ttl)
        rows = self._rows("FINISH_RESULT", {"id": job_id, "worker": worker, "value": result, "ttl": ttl})
        return bool(rows)

    @translated
    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        [done] = self._fail(worker, [(job, failure)], limits)
        return done

    @translated
    def fail_jobs(
        self,
        *,
        worker: str,
        failures: Sequence[tuple[Job, Failure]],
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[bool]:
        return self._fail(worker, failures, limits)

    @translated
    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        row = codec.encode(attrs.evolve(job, attempts=job.attempts + 1))
        params = {
            **attrs.asdict(row),
            "delay": max(0.0, delay),
            "holder": worker,
            "fallback": _manager_of(worker),
        }
        return bool(self._rows("RETRY", params))

    @translated
    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        params = {"ids": list(dict.fromkeys(job_ids)), "holder": worker, "fallback": _manager_of(worker)}
        [(count, _)] = self._rows("RELEASE", params)
        return int(count)

    @translated
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

    @translated
    def deregister_worker(self, *, manager: str, worker: str) -> None:
        self._check_cached(manager)
        self._check_cached(worker)
        s = self._schema
        # One statement, so that no process stopped half-way through holds the rows (a
        # transaction of two would make its manager's heartbeat wait on the deleted row).
        self._connection().execute(
            f"WITH gone AS (DELETE FROM {s}.workers WHERE manager = %(manager)s AND name = %(worker)s) "
            f"DELETE FROM {s}.heartbeats WHERE name = %(worker)s",
            {"manager": manager, "worker": worker},
        )
        self._close_session(worker)
