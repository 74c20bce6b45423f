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
from qw_core.models import Job
from qw_core.unique import UniqueSetting, unique_of, with_unique
from qw_postgres import codec, uniques
from qw_postgres.base import _origin
from qw_postgres.names import check_name
from qw_postgres.producing import QUEUE_BATCH, insert
from qw_postgres.schema import DEFAULT_SCHEMA, check_schema


def enqueue(
    conn: psycopg.Connection[Any],
    jobs: Job | Sequence[Job],
    *,
    schema: str = DEFAULT_SCHEMA,
    delay: float = 0.0,
    at: datetime.datetime | float | None = None,
    unique: UniqueSetting = None,
) -> list[str]:
    """Queue ``jobs`` with ``conn``, inside its current transaction; their ids.

    Nothing is committed here: the jobs become visible when the caller's transaction
    commits (at once, if ``conn`` is in autocommit mode), and vanish with a rollback.
    The schema must exist (a :class:`~qw_postgres.PostgresBroker` or ``qw migrate``
    creates it). Queueing is idempotent per job id, as :meth:`Broker.queue_jobs` is.

    A job with a unique key (``unique=``, or its own ``meta["unique"]``) is stored only if
    no other job holds the key, as :meth:`Broker.queue_job` does: its entry is then the
    holder's id. The key is taken in this transaction: another producer of the same key
    waits until it ends, and sees this job once it commits, or a free key after a rollback.

    :param schema: the schema of qw's tables (the URL's ``?schema=``).
    :param delay: seconds before the jobs may be taken.
    :param at: when they may be taken instead (a datetime, or seconds since the epoch).
    :param unique: a unique key, or a :class:`~qw_core.unique.Unique`, for every job given
        (of several jobs with one key, one is queued).
    :raises InvalidJob: a job's data is not JSON (nothing is written).
    :raises InvalidName: a named manager, worker or queue is not a valid name.
    :raises ConfigurationError: ``unique`` (or a job's ``meta["unique"]``) is not valid.
    """
    batch = [with_unique(job, unique) for job in ([jobs] if isinstance(jobs, Job) else jobs)]
    when = at.timestamp() if isinstance(at, datetime.datetime) else at
    waits = check_delay(batch, delay, when)
    staged: list[uniques.Staged] = []
    for job in batch:
        for name in (job.manager, job.worker, job.queue):
            if name is not None:
                check_name(name)
        staged.append((codec.encode(job), _origin(job), job.worker, unique_of(job)))
    if any(key is not None for *_, key in staged):
        done = uniques.queue(conn, schema, staged, waits=waits, delay=delay, at=when, batch=QUEUE_BATCH)
        return [queued.id for queued in done]
    insert(conn, check_schema(schema), [row[:3] for row in staged], waits=waits, delay=delay, at=when)
    return [job.id for job in batch]
