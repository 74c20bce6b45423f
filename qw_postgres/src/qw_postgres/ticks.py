"""The PostgreSQL backend's part of periodic jobs: the database's clock, ticks and declarations.

:class:`~qw_postgres.broker.PostgresBroker` delegates its schedule methods here (at its
error boundary). Two tables keep them (see :mod:`qw_postgres.schema`): ``ticks``, each
schedule's last enqueued tick, and ``declarations``, what each running manager declares,
each row with an expiry time on the database's clock.

Enqueueing a tick is one statement (:data:`qw_postgres.sql.TICK`): ``record_tick()``
upserts the schedule's row only if the tick is newer, and the same statement stores the
tick's job exactly as :meth:`~qw_postgres.broker.PostgresBroker.queue_jobs` does (skipped
if a job with its id is stored) and notifies its queue. One statement in autocommit mode is
one transaction, so the tick is recorded with its job queued, or neither; the row lock the
upsert takes serialises concurrent managers on the schedule's row until the statement
commits, and holds nothing between calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from qw_core.models import TickResult, TickState
from qw_core.schedules import check_schedule_id
from qw_postgres import codec, uniques
from qw_postgres.sql import queue_params, statements
from qw_postgres.uniques import Staged

#: Seconds a schedule's last tick is kept after it was enqueued or last declared: a week
#: (as on Redis: a downtime longer than that starts the schedule afresh), plus the hour
#: within which a declaration does not rewrite the row (see :data:`REFRESH`).
KEEP = 7 * 86400 + 3600
#: A declaration extends a last tick's expiry only when less than this remains, so the
#: row is rewritten about once an hour rather than on every heartbeat of every manager.
REFRESH = 7 * 86400

Connection = psycopg.Connection[Any]


def now(conn: Connection, schema: str) -> float:
    """The database's clock (``clock_timestamp()``), seconds since the epoch."""
    [(value,)] = conn.execute(statements(schema)["NOW"]).fetchall()
    return float(value)


def _state(tick: float, manager: str, at: float, job_id: str) -> TickState:
    return TickState(tick=float(tick), manager=str(manager), at=float(at), job_id=str(job_id))


def enqueue_tick(
    conn: Connection,
    schema: str,
    schedule_id: str,
    tick: float,
    stored: tuple[codec.Row, str, str | None],
    *,
    manager: str,
) -> TickResult:
    """See :meth:`Broker.enqueue_tick <qw_core.broker.Broker.enqueue_tick>`; the tick's job
    is ``stored``, encoded (and checked) by the broker as for :meth:`queue_jobs
    <qw_postgres.broker.PostgresBroker.queue_jobs>`, and its id is the job's id."""
    row = stored[0]
    params = {
        **queue_params([stored], waits=False, delay=0.0, at=None),
        "schedule": schedule_id,
        "tick": float(tick),
        "by": manager,
        "job": row.id,
        "keep": float(KEEP),
    }
    [(enqueued, last_tick, last_manager, at, job_id, _)] = conn.execute(
        statements(schema)["TICK"], params
    ).fetchall()
    return TickResult(enqueued=bool(enqueued), last=_state(last_tick, last_manager, at, job_id))


def enqueue_unique_tick(
    conn: Connection,
    schema: str,
    schedule_id: str,
    tick: float,
    staged: Staged,
    *,
    manager: str,
) -> TickResult:
    """:func:`enqueue_tick` for a job with a unique key, in one transaction: the tick is
    recorded as :func:`enqueue_tick` records it, then the job is queued only if it takes
    its key (:func:`qw_postgres.uniques.queue`); if another job holds the key, that job is
    recorded as the tick's and nothing is queued (as on Redis and the memory backend)."""
    sql = statements(schema)
    params = {
        "schedule": schedule_id,
        "tick": float(tick),
        "by": manager,
        "job": staged[0].id,
        "keep": float(KEEP),
    }
    with conn.transaction():
        [(enqueued, last_tick, last_manager, at, job_id)] = conn.execute(
            sql["RECORD_TICK"], params
        ).fetchall()
        if enqueued:
            [queued] = uniques.queue(conn, schema, [staged], waits=False, delay=0.0, at=None, batch=1)
            if queued.id != job_id:
                conn.execute(sql["TICK_HOLDER"], {"schedule": schedule_id, "job": queued.id})
                job_id = queued.id
    return TickResult(enqueued=bool(enqueued), last=_state(last_tick, last_manager, at, job_id))


def declare(
    conn: Connection, schema: str, *, manager: str, declarations: Mapping[str, str], ttl: float
) -> dict[str, TickState | None]:
    """See :meth:`Broker.declare_schedules <qw_core.broker.Broker.declare_schedules>`: one
    statement replaces ``manager``'s declarations and reads (and keeps) their last ticks."""
    for schedule_id, text in declarations.items():
        check_schedule_id(schedule_id)
        if not isinstance(text, str):
            raise TypeError(f"the declaration of schedule {schedule_id!r} must be text")
    ids = list(declarations)
    rows = conn.execute(
        statements(schema)["DECLARE"],
        {
            "manager": manager,
            "ids": ids,
            "texts": [declarations[i] for i in ids],
            "ttl": float(ttl),
            "keep": float(KEEP),
            "refresh": float(REFRESH),
        },
    ).fetchall()
    found = {row[0]: _state(*row[1:5]) for row in rows}
    return {schedule_id: found.get(schedule_id) for schedule_id in ids}


def declarations(conn: Connection, schema: str) -> dict[str, dict[str, str]]:
    """See :meth:`Broker.schedule_declarations <qw_core.broker.Broker.schedule_declarations>`."""
    found: dict[str, dict[str, str]] = {}
    for manager, schedule_id, text in conn.execute(statements(schema)["DECLARED"]):
        found.setdefault(manager, {})[schedule_id] = text
    return found


def states(conn: Connection, schema: str, schedule_ids: Sequence[str]) -> dict[str, TickState]:
    """See :meth:`Broker.tick_states <qw_core.broker.Broker.tick_states>`: the live rows."""
    if not schedule_ids:
        return {}
    rows = conn.execute(statements(schema)["TICKS"], [list(schedule_ids)]).fetchall()
    return {row[0]: _state(*row[1:5]) for row in rows}
