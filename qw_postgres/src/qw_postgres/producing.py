"""Queueing and results: the :class:`~qw_core.broker.Producer` role of the PostgreSQL broker.

A batch of jobs is inserted by statements of at most :data:`QUEUE_BATCH` rows, each
notifying the channels of the queues it fills, which PostgreSQL delivers when the
transaction commits. One part of :class:`~qw_postgres.broker.PostgresBroker`, over the
connection of :mod:`qw_postgres.base`.

Transactional enqueue: :meth:`ProducerPart.queue_jobs` with ``connection=`` (or
:func:`qw_postgres.enqueue`) inserts the jobs with the caller's own connection, inside
the caller's transaction: they are visible, and wake workers, only if it commits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from qw_core.broker import check_delay
from qw_core.models import Job
from qw_core.results import JobResult, decode_value
from qw_core.unique import UNIQUE_META, Queued, unique_of
from qw_postgres import codec, uniques
from qw_postgres.base import SAFETY_POLL, Connection, PostgresBase, translated
from qw_postgres.schema import channel
from qw_postgres.sql import queue_params, statements

#: Most jobs one queueing statement writes (its positions must stay within one block).
QUEUE_BATCH = 5000


class ProducerPart(PostgresBase):
    """The producing methods of :class:`~qw_postgres.broker.PostgresBroker`."""

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

    @translated
    def _insert(
        self, rows: list[tuple[codec.Row, str, str | None]], waits: bool, delay: float, at: float | None
    ) -> None:
        insert(self._connection(), self._schema, rows, waits=waits, delay=delay, at=at)

    @translated
    def _insert_unique(
        self, staged: list[uniques.Staged], waits: bool, delay: float, at: float | None
    ) -> list[Queued]:
        return uniques.queue(
            self._connection(), self._schema, staged, waits=waits, delay=delay, at=at, batch=QUEUE_BATCH
        )

    @translated
    def get_result(self, job_id: str) -> JobResult | None:
        rows = self._rows("RESULT", [job_id])
        if not rows:
            return None
        value, finished_at, worker = rows[0]
        return JobResult(job_id=job_id, value=decode_value(value), finished_at=finished_at, worker=worker)

    @translated
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
