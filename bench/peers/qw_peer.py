"""qw: ``qw run -w N`` (a manager and N worker processes) on the shared queue.

``BENCH_QW_PREFETCH`` sets ``--prefetch`` (unset: qw's default).

In I/O mode (``BENCH_IO_MS`` set) the target is ``atarget``, a coroutine, run with
qw's default concurrency for an ``async def`` target (100 jobs awaited at once in each
worker process), or ``--concurrency C`` with ``BENCH_QW_CONCURRENCY``; with ``BENCH_QW_SYNC`` set it stays the plain function ``target``,
one job at a time per worker process, the command otherwise as in the no-op mode.
"""

import os
import sys

from qw_core import Job
from qw_redis import RedisBroker

from peers import common

#: The ``async def`` target and its ``--concurrency``, in I/O mode unless BENCH_QW_SYNC is set.
ASYNC = common.IO_WAIT is not None and not os.environ.get("BENCH_QW_SYNC")
CONCURRENCY = int(os.environ.get("BENCH_QW_CONCURRENCY") or 0)  # 0: qw's default


def version():
    return common.version("qw-core", "qw-redis", "redis", "hiredis")


def target(job_id, job_data):
    common.sync_task(job_data.get("t", 0))


async def atarget(job_id, job_data):
    await common.async_task(job_data.get("t", 0))


def concurrency():
    if ASYNC and not CONCURRENCY:
        from qw_core.execution import DEFAULT_ASYNC_CONCURRENCY

        return common.concurrency(DEFAULT_ASYNC_CONCURRENCY, f"{DEFAULT_ASYNC_CONCURRENCY} (default, async def)")
    if ASYNC:
        return common.concurrency(CONCURRENCY, f"--concurrency {CONCURRENCY} (async def target)")
    return common.concurrency(1, "1 (def target)")


class Producer:
    def __init__(self):
        self.broker = RedisBroker.from_url(common.URL)

    def send(self, t, queue="shared"):
        manager = common.QW_MANAGER if queue == "manager" else None
        self.broker.queue_job(Job.new({"t": t}, manager=manager))

    def send_many(self, n):
        self.broker.queue_jobs([Job.new({"t": 0}) for _ in range(n)])

    def close(self):
        self.broker.close()


def worker(workers):
    argv = [sys.executable, "-m", "qw_cli", "run", "-w", str(workers), "-n", common.QW_MANAGER]
    argv += ["-l", "warning", "--url", common.URL]
    if os.environ.get("BENCH_QW_PREFETCH"):
        argv += ["--prefetch", os.environ["BENCH_QW_PREFETCH"]]
    if ASYNC and CONCURRENCY:
        argv += ["--concurrency", str(CONCURRENCY)]
    os.execv(sys.executable, [*argv, "peers.qw_peer:atarget" if ASYNC else "peers.qw_peer:target"])
