"""Task functions queued inside the caller's transaction: ``enqueue(conn, task.job(...))``."""

from __future__ import annotations

import psycopg
from qwtest_postgres import SERVER_URL

import qw_postgres
from qw_core.tasks import Router
from qw_core.testing import run_jobs
from qw_postgres.broker import PostgresBroker


def test_a_task_call_queued_in_a_transaction_runs_once_it_commits(
    pg_broker: PostgresBroker, pg_schema: str
) -> None:
    router = Router()
    sent: list[tuple[int, str]] = []

    @router.task(unique=True)
    def send_receipt(order: int, to: str = "ann") -> None:
        sent.append((order, to))

    with psycopg.connect(SERVER_URL) as conn:  # a transaction is open until commit/rollback
        [kept] = qw_postgres.enqueue(conn, send_receipt.job(1, to="bob"), schema=pg_schema)
        assert pg_broker.get_job(kept) is None, "invisible before the commit"
        conn.commit()
        [dropped] = qw_postgres.enqueue(conn, send_receipt.job(2), schema=pg_schema)
        conn.rollback()
        # the task's unique key (task + arguments) holds inside transactions too
        [again] = qw_postgres.enqueue(conn, send_receipt.job(1, to="bob"), schema=pg_schema)
        conn.commit()
    assert again == kept

    ran = run_jobs(pg_broker, router)

    assert [r.job.id for r in ran] == [kept]
    assert sent == [(1, "bob")]
    assert pg_broker.get_job(dropped) is None
