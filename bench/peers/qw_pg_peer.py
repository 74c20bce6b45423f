"""qw on PostgreSQL: ``qw run --backend postgres -w N`` (a manager and N worker processes).

As ``qw_peer`` but with qw-postgres: ``BENCH_QW_PREFETCH`` sets ``--prefetch``; in I/O
mode the target is ``atarget`` (qw's default concurrency for an ``async def`` target, or
``--concurrency`` from ``BENCH_QW_CONCURRENCY``) unless ``BENCH_QW_SYNC`` is set.
``setup`` creates qw's schema (``qw migrate``'s migrations, applied on first open).
"""

import os
import sys

from qw_core import Job
from qw_postgres import PostgresBroker

from peers import common
from peers.qw_peer import ASYNC, CONCURRENCY, atarget, concurrency, target  # noqa: F401 - the targets

__all__ = ["Producer", "atarget", "concurrency", "setup", "target", "version", "worker"]


def version():
    return common.version("qw-core", "qw-postgres", "psycopg")


def setup():
    PostgresBroker.from_url(common.PG_URL).close()


class Producer:
    def __init__(self):
        self.broker = PostgresBroker.from_url(common.PG_URL)

    def send(self, t, queue="shared"):
        manager = common.QW_MANAGER if queue == "manager" else None
        self.broker.queue_job(Job.new({"t": t}, manager=manager))

    def send_many(self, n):
        self.broker.queue_jobs([Job.new({"t": 0}) for _ in range(n)])

    def close(self):
        self.broker.close()


def worker(workers):
    argv = [sys.executable, "-m", "qw_cli", "run", "--backend", "postgres", "-w", str(workers)]
    argv += ["-n", common.QW_MANAGER, "-l", "warning", "--url", common.PG_URL]
    if os.environ.get("BENCH_QW_PREFETCH"):
        argv += ["--prefetch", os.environ["BENCH_QW_PREFETCH"]]
    if ASYNC and CONCURRENCY:
        argv += ["--concurrency", str(CONCURRENCY)]
    os.execv(sys.executable, [*argv, "peers.qw_pg_peer:atarget" if ASYNC else "peers.qw_pg_peer:target"])
