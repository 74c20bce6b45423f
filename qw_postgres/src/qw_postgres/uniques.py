"""Unique jobs on PostgreSQL (see :mod:`qw_core.unique` for what they promise).

A key is a row of ``<schema>.uniques``: the key, the job that holds it, its mode and (for
a throttle) when it expires. Queueing jobs with keys is one statement
(:data:`~qw_postgres.sql.QUEUE_UNIQUE`): ``<schema>.claim_uniques()`` inserts each key's
row, or locks it and judges its holder from the holder's job row, then the jobs whose keys
were taken are stored; so the check, the key and the job commit together, in the caller's
transaction if it has one (a producer racing with an open transaction that took the key
waits for it to end, then sees its job, or a free key after a rollback).

Nothing releases a key: a key whose job is no longer a row of ``<schema>.jobs`` (it
finished or failed), or no longer waits to start (``until="start"``), or whose TTL passed,
is free, and its row is overwritten by the next job that takes it. So finishing, failing
and taking jobs never touch the table; :func:`sweep` deletes the rows of keys nobody holds
any more, a bounded slice per reaper round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qw_core.errors import ConfigurationError
from qw_core.unique import THROTTLE, Queued, Unique
from qw_postgres import codec
from qw_postgres.schema import check_schema
from qw_postgres.sql import queue_params, statements

#: A job about to be queued: its row, origin, worker, and unique key (or ``None``).
Staged = tuple[codec.Row, str, str | None, Unique | None]

#: Keys looked at per :func:`sweep` call.
SWEEP_BATCH = 1000
#: The longest key PostgreSQL keeps, in UTF-8 bytes: the key is the table's primary key,
#: and a B-tree index entry holds at most 2,704 bytes (a third of an 8 kB page), which
#: 1,000 characters of non-ASCII text can pass (an emoji is 4 bytes).
MAX_KEY_BYTES = 2000


def check_key(unique: Unique) -> str:
    """``unique``'s key, if PostgreSQL can store it.

    :raises ConfigurationError: it has no key, holds a NUL character (text columns
        cannot), or is longer than :data:`MAX_KEY_BYTES` in UTF-8.
    """
    key = unique.key
    if key is None:
        raise ConfigurationError("a unique job needs a key (only a task function can make one up)")
    if "\x00" in key:
        raise ConfigurationError("a unique key cannot contain a NUL character on PostgreSQL")
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise ConfigurationError(
            f"a unique key is at most {MAX_KEY_BYTES} bytes in UTF-8 on PostgreSQL, not {size}"
        )
    return key


def queue(
    conn: Any,
    schema: str,
    jobs: Sequence[Staged],
    *,
    waits: bool,
    delay: float,
    at: float | None,
    batch: int,
) -> list[Queued]:
    """Queue ``jobs`` with ``conn`` (commits nothing itself), ``batch`` a statement; what
    became of each.

    Of the jobs with one key, the first is sent (and the others get its answer: its id,
    or its key's holder, not created; a second copy of the same job answers as the
    first), so each statement claims a key at most once.
    """
    query = statements(check_schema(schema))["QUEUE_UNIQUE"]
    first: dict[str, int] = {}
    follows: dict[int, int] = {}
    sent: list[int] = []
    for index, (_, _, _, unique) in enumerate(jobs):
        if unique is not None:
            leader = first.setdefault(check_key(unique), index)
            if leader != index:
                follows[index] = leader
                continue
        sent.append(index)
    done: dict[int, Queued] = {}
    for start in range(0, len(sent), batch):
        part = sent[start : start + batch]
        keyed = [(jobs[i][0].id, unique) for i in part if (unique := jobs[i][3]) is not None]
        params = {
            **queue_params([jobs[i][:3] for i in part], waits=waits, delay=delay, at=at),
            "keys": [unique.key for _, unique in keyed],
            "key_jobs": [job_id for job_id, _ in keyed],
            "modes": [unique.until for _, unique in keyed],
            "ttls": [unique.ttl if unique.until == THROTTLE else None for _, unique in keyed],
        }
        [(_, refused, holders)] = conn.execute(query, params).fetchall()
        held_by = dict(zip(refused or [], holders or [], strict=True))
        for i in part:
            job_id = jobs[i][0].id
            holder = held_by.get(job_id) if jobs[i][3] is not None else None
            done[i] = Queued(job_id, True) if holder is None else Queued(holder, False)
    for index, leader in follows.items():
        answer = done[leader]
        done[index] = answer if jobs[index][0].id == jobs[leader][0].id else Queued(answer.id, False)
    return [done[index] for index in range(len(jobs))]


def sweep(conn: Any, schema: str, after: str) -> str:
    """Delete the rows of keys no job holds among the :data:`SWEEP_BATCH` keys after
    ``after``; where the next call starts (``""`` once past the last key)."""
    [(last,)] = conn.execute(f"SELECT {schema}.sweep_uniques(%s, %s)", [after, SWEEP_BATCH]).fetchall()
    return "" if last is None else str(last)
