"""Rows of ``<schema>.jobs`` that another program wrote and Python cannot read as a job:
JSON the server accepts but ``json.loads`` refuses (nesting too deep to parse, an integer
too long to convert) or meta that is not an object. Each goes to the failed registry,
kind ``invalid``, with its stored text kept as it was, and the queue moves on: no take
fails for ever on it, and no requeue runs it with data it was not queued with.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from qwtest_postgres import SERVER_URL

from qw_core.models import Job
from qw_postgres.broker import PostgresBroker


def _too_deep_for_python() -> str:
    """JSON nested as little as Python's parser refuses and PostgreSQL still parses (with its
    default ``max_stack_depth``, some 12,000 levels); how deep that is depends on the Python
    (3.10 refuses 1,000 levels, 3.13 reads 9,000)."""
    for depth in range(1000, 12_001, 1000):
        text = "[" * depth + "]" * depth
        try:
            json.loads(text)
        except RecursionError:
            return text
    raise AssertionError("this Python reads JSON nested 12,000 deep: find another unreadable row")


#: Stored text of each hand-written job, by id: (data, meta).
UNREADABLE = {
    "deep": (_too_deep_for_python(), "{}"),  # PostgreSQL parses it; Python's json recurses too deep
    "long-int": ("1" * 5000, "{}"),  # beyond Python's digit limit for int()
    "huge-float": ('{"n": 1e400}', '{"timeout": 1e400}'),  # read as infinity, never written again
    "meta-not-object": ('{"n": 1}', "5"),
}


def _write(schema: str, job_id: str, data: str, meta: str) -> None:
    """A queued job on the shared queue, written as another program would."""
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema}.jobs (id, data, meta, state, origin, position) "
            f"VALUES (%s, %s::json, %s::json, 'queued', 'default', nextval('{schema}.positions') * 1048576)",
            [job_id, data, meta],
        )


def _stored(schema: str, table: str, job_id: str) -> tuple[str, str] | None:
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT data::text, meta::text FROM {schema}.{table} WHERE id = %s", [job_id]
        ).fetchone()
    return None if row is None else (row[0], row[1])


@pytest.mark.parametrize("bad_id", sorted(UNREADABLE))
def test_an_unreadable_row_is_failed_with_its_text_kept_and_the_queue_moves_on(
    pg_broker: PostgresBroker, pg_schema: str, bad_id: str
) -> None:
    before, after = Job.new({"n": 1}), Job.new({"n": 2})
    pg_broker.queue_job(before)
    _write(pg_schema, bad_id, *UNREADABLE[bad_id])
    pg_broker.queue_job(after)
    taken = pg_broker.take(manager="m1", worker="m1.1", limit=10)
    assert [job.id for job in taken] == [before.id, after.id]
    assert pg_broker.take(manager="m1", worker="m1.1", held=[before.id, after.id], limit=10) == []
    [entry] = pg_broker.failed_jobs()
    assert (entry.job.id, entry.job.data, entry.failure.kind) == (bad_id, None, "invalid")
    assert pg_broker.get_failed(bad_id) == entry
    assert pg_broker.job_status(bad_id).failure == entry.failure
    assert _stored(pg_schema, "failed", bad_id) == UNREADABLE[bad_id], "kept as it was written"


def test_a_requeued_unreadable_job_is_failed_again_never_run_without_its_data(
    pg_broker: PostgresBroker, pg_schema: str
) -> None:
    _write(pg_schema, "meta-not-object", *UNREADABLE["meta-not-object"])
    assert pg_broker.take(manager="m1", worker="m1.1") == []
    assert pg_broker.requeue_failed("meta-not-object")
    assert _stored(pg_schema, "jobs", "meta-not-object") == UNREADABLE["meta-not-object"]
    assert pg_broker.take(manager="m1", worker="m1.1") == [], "still unreadable: not run"
    [entry] = pg_broker.failed_jobs()
    assert (entry.job.id, entry.failure.kind) == ("meta-not-object", "invalid")
    # Mended by hand, it runs with the data it was queued with.
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f"UPDATE {pg_schema}.failed SET meta = '{{}}' WHERE id = 'meta-not-object'")
    assert pg_broker.requeue_failed("meta-not-object")
    [job] = pg_broker.take(manager="m1", worker="m1.1")
    assert (job.id, job.data) == ("meta-not-object", {"n": 1})
