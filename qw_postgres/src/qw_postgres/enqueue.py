"""Transactional enqueue: queue jobs inside your own database transaction.

The jobs are inserted with your psycopg connection, in the transaction it has open: they
exist (and wake a worker) only if that transaction commits, and a rollback leaves no
trace, so a row your code writes and the job that processes it are never one without the
other (no "outbox" table to drain).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import psycopg

from qw_core.broker import check_delay
from qw_core.memory import check_name
from qw_core.models import Job
from qw_postgres import codec
from qw_postgres.broker import _origin, insert
from qw_postgres.schema import DEFAULT_SCHEMA, check_schema


def enqueue(
    conn: psycopg.Connection[Any],
    jobs: Job | Sequence[Job],
    *,
    schema: str = DEFAULT_SCHEMA,
    delay: float = 0.0,
    at: datetime.datetime | float | None = None,
) -> list[str]:
    """Queue ``jobs`` with ``conn``, inside its current transaction; their ids.

    Nothing is committed here: the jobs become visible when the caller's transaction
    commits (at once, if ``conn`` is in autocommit mode), and vanish with a rollback.
    The schema must exist (a :class:`~qw_postgres.PostgresBroker` or ``qw migrate``
    creates it). Queueing is idempotent per job id, as :meth:`Broker.queue_jobs` is.

    :param schema: the schema of qw's tables (the URL's ``?schema=``).
    :param delay: seconds before the jobs may be taken.
    :param at: when they may be taken instead (a datetime, or seconds since the epoch).
    :raises InvalidJob: a job's data is not JSON (nothing is written).
    :raises InvalidName: a named manager, worker or queue is not a valid name.
    """
    batch = [jobs] if isinstance(jobs, Job) else list(jobs)
    when = at.timestamp() if isinstance(at, datetime.datetime) else at
    waits = check_delay(batch, delay, when)
    rows = []
    for job in batch:
        codec.refuse_unique(job)
        for name in (job.manager, job.worker, job.queue):
            if name is not None:
                check_name(name)
        rows.append((codec.encode(job), _origin(job), job.worker))
    insert(conn, check_schema(schema), rows, waits=waits, delay=delay, at=when)
    return [job.id for job in batch]
