"""Profile one qw worker draining a deep queue, in this process (no manager, no fork).

    python bench/profile_worker.py                     # jobs/s of one worker, no profiler
    python bench/profile_worker.py --profile cprofile  # and the top functions by own time
    python bench/profile_worker.py --prefetch 10 --jobs 50000
    python bench/profile_worker.py --io 20 --jobs 10000      # an async def target that waits
    python bench/profile_worker.py --backend postgres  # qw-postgres, on a private PostgreSQL

Starts its own redis-server (like ``run.py``), queues ``--jobs`` benchmark jobs with
``queue_jobs``, then runs :class:`qw_core.worker.Worker` with the default plugins until
they are all done, and prints the rate and the Redis round trips per job (the task's INCR
included). What one worker costs per job is what limits a box whose cores are shared
by the workers and Redis. With ``--backend postgres`` the jobs are in a private PostgreSQL
cluster (``pgserver.py``, as ``run.py --backend postgres`` starts it) and the round trips
are the task's INCRs alone; the server's write transactions and WAL bytes per job follow.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import contextlib  # noqa: E402

import pgserver  # noqa: E402
import redis.asyncio  # noqa: E402
from run import private_redis, snapshot, url_of  # noqa: E402

from qw_core import Job  # noqa: E402
from qw_core.worker import Worker  # noqa: E402
from qw_redis import RedisBroker  # noqa: E402


class Task:
    """The benchmark job as a plain function (``run``) or, with ``io_ms``, an ``async def``
    that awaits that long first (``run_async``); the worker stops after ``jobs`` of them."""

    def __init__(self, url: str, jobs: int, *, incr: bool, io_ms: float | None) -> None:
        self.url, self.jobs, self.incr, self.io_ms = url, jobs, incr, io_ms
        self.counter = RedisBroker.from_url(url)._client  # the task's own connection
        self.async_counter: redis.asyncio.Redis | None = None  # made on the worker's event loop
        self.done = 0
        self.worker: Worker | None = None

    def run(self, job_id: str, job_data: Any) -> None:
        if self.incr:
            self.counter.incr("bench:done")
        self._count()

    async def run_async(self, job_id: str, job_data: Any) -> None:
        await asyncio.sleep((self.io_ms or 0) / 1000)
        if self.async_counter is None:
            self.async_counter = redis.asyncio.Redis.from_url(self.url)
        if self.incr:
            await self.async_counter.incr("bench:done")
        self._count()

    def _count(self) -> None:
        self.done += 1
        if self.done == self.jobs and self.worker is not None:
            self.worker.request_stop()


def _opener(url: str, server: pgserver.Server | None) -> Any:
    """What opens a broker: on the private PostgreSQL if there is one, else on Redis."""
    if server is None:
        return lambda: RedisBroker.from_url(url)
    from qw_postgres import PostgresBroker  # noqa: PLC0415 - only with --backend postgres

    return lambda: PostgresBroker.from_url(server.url())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=None, help="default: the Worker's default")
    parser.add_argument("--profile", choices=["none", "cprofile"], default="none")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-incr", action="store_true", help="a target that does not touch Redis")
    parser.add_argument(
        "--io", type=float, default=None, metavar="MS", help="an async def target that awaits MS ms first"
    )
    parser.add_argument("--concurrency", type=int, default=None, help="default: the Worker's default")
    parser.add_argument("--redis-server", default="redis-server")
    parser.add_argument("--backend", choices=("redis", "postgres"), default="redis")
    parser.add_argument("--pg-bin", default=pgserver.PG_BIN)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(private_redis(args.redis_server))
        url = url_of(client)
        pg = args.backend == "postgres"
        server = stack.enter_context(pgserver.private_postgres(args.pg_bin)) if pg else None
        open_broker = _opener(url, server)
        producer = open_broker()
        producer.queue_jobs([Job.new({"t": 0}) for _ in range(args.jobs)])
        producer.close()
        task = Task(url, args.jobs, incr=not args.no_incr, io_ms=args.io)
        kwargs: dict[str, Any] = {} if args.prefetch is None else {"prefetch": args.prefetch}
        if args.concurrency is not None:
            kwargs["concurrency"] = args.concurrency
        chosen = task.run if args.io is None else task.run_async
        worker = task.worker = Worker(open_broker(), chosen, manager="bench", block_timeout=0.1, **kwargs)
        client.config_resetstat()
        prober = pgserver.Prober(server, "postgres") if server is not None else None
        probed = prober() if prober is not None else None
        before = snapshot(client)
        profiler = cProfile.Profile() if args.profile == "cprofile" else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        worker.run()
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
        after = snapshot(client)
        jobs = task.done
        print(
            f"one worker: {jobs / seconds:,.0f} jobs/s over {jobs:,} jobs; "
            f"{(after.reads - before.reads) / jobs:.3f} round trips/job (INCR included), "
            f"{sum(after.commands.values()) / jobs:.2f} commands/job"
        )
        if prober is not None and probed is not None:
            figures = pgserver.per_job(probed, prober(), jobs)
            print(
                f"PostgreSQL: {figures['xacts_per_job']:.3f} write transactions/job, "
                f"{figures['wal_bytes_per_job']:,.0f} WAL bytes/job"
            )
            prober.close()
        if profiler is not None:
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
