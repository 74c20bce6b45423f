"""pgqueuer: 2 x ``pgq run`` (see ``serve()``) with its defaults (``--batch-size 10``, no concurrency limit on
the entrypoint), on asyncpg as its documentation's examples are.

The entrypoint is a coroutine; the job's payload is the queueing time (``t``) as text.
Jobs are queued with ``Queries.enqueue``, in bulk with its list form (1,000 a call).
``setup`` installs pgqueuer's schema (``Queries.install``, what ``pgq install`` does).
"""

import contextlib
import os
import sys

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

from peers import common

BATCH_SIZE = 10  # pgq run's default --batch-size


def version():
    return common.version("pgqueuer", "asyncpg", "redis", "hiredis")


def concurrency():
    return common.concurrency(
        None, f"no limit (concurrency_limit 0, default); --batch-size {BATCH_SIZE} (default)"
    )


async def setup():
    conn = await asyncpg.connect(common.PG_URL)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def main():
    """The factory ``pgq run`` calls in each worker process (pgqueuer 1.6 wants an async
    context manager)."""
    conn = await asyncpg.connect(common.PG_URL)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("bench")
    async def bench(job) -> None:
        await common.async_task(float(job.payload or b"0"))

    try:
        yield pgq
    finally:
        await conn.close()


class Producer:
    async def open(self):
        self.conn = await asyncpg.connect(common.PG_URL)
        self.queries = Queries(AsyncpgDriver(self.conn))

    async def send(self, t, queue="shared"):
        await self.queries.enqueue("bench", repr(t).encode())

    async def send_many(self, n):
        for start in range(0, n, 1000):
            size = min(1000, n - start)
            await self.queries.enqueue(["bench"] * size, [b"0"] * size, [0] * size)

    async def close(self):
        await self.conn.close()


def serve():
    """``pgq run peers.pgqueuer_peer:main`` with its defaults and ``--log-level WARNING``:
    the command's own function, called with its options' values (in pgqueuer 1.6 with this
    typer, ``pgq run`` fails before it starts: its log-level option reaches the logger
    setup as text, not as the enum it expects)."""
    from pgqueuer.adapters.cli import cli
    from pgqueuer.core.logconfig import LogLevel
    from pgqueuer.domain.types import QueueExecutionMode

    cli.run(
        factory_fn="peers.pgqueuer_peer:main",
        factory_args=None,
        dequeue_timeout=30.0,
        batch_size=BATCH_SIZE,
        heartbeat_timeout=30.0,
        restart_delay=5.0,
        restart_on_failure=False,
        log_level=LogLevel.WARNING,
        mode=QueueExecutionMode.continuous,
        max_concurrent_tasks=None,
        shutdown_on_listener_failure=False,
    )


def worker(workers):
    argv = [sys.executable, "-c", "from peers.pgqueuer_peer import serve; serve()"]
    if workers == 1:
        os.execv(argv[0], argv)
    common.run_processes([argv] * workers)
