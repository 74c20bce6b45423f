"""Helpers of the PostgreSQL reliability tests: managers on a PostgreSQL URL, and where
each job is, read through the broker (the "exactly one place" invariant)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import psycopg
from qwtest_postgres import SERVER_URL
from reliability_support import FAST, RECORDING, TARGET

from qw_core.manager import Manager
from qw_core.models import Job, State
from qw_postgres.broker import PostgresBroker


def start_manager(url: str, name: str, **kwargs: Any) -> Manager:
    """An in-process manager (workers forked) on the PostgreSQL at ``url``, started."""
    target = kwargs.pop("target", TARGET)
    options = {**FAST, "num_workers": 2, "plugins": RECORDING, **kwargs}
    manager = Manager(target, PostgresBroker.from_url(url), name=name, **options)
    manager.start()
    return manager


def queue(url: str, jobs: list[Job]) -> list[str]:
    with contextlib.closing(PostgresBroker.from_url(url)) as broker:
        broker.queue_jobs(jobs)
    return [job.id for job in jobs]


def places(url: str, job_ids: Iterable[str]) -> dict[str, str]:
    """Where each job is: ``queued``, ``delayed``, ``held:<worker>``, ``failed``, or
    ``finished`` (nowhere: a job is a row of one table at a time, by the schema's keys)."""
    found = {}
    with contextlib.closing(PostgresBroker.from_url(url)) as broker:
        for job_id in job_ids:
            status = broker.job_status(job_id)
            if status.state is State.HELD:
                found[job_id] = f"held:{status.worker}"
            elif status.state in (State.UNKNOWN, State.SUCCEEDED):
                found[job_id] = "finished"
            else:
                found[job_id] = status.state.value
    return found


def holders(schema: str, lock_class: int, name: str, server: str = SERVER_URL) -> list[int]:
    """The backends (pids) holding the session lock of ``name`` on ``server``."""
    with psycopg.connect(server, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted "
            "AND classid = %s::oid AND objid = hashtext(%s)::oid "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY pid",
            [lock_class, f"{schema}:{name}"],
        ).fetchall()
    return [int(pid) for (pid,) in rows]
