"""Profile one qw worker draining a deep queue, in this process (no manager, no fork).

    python bench/profile_worker.py                     # jobs/s of one worker, no profiler
    python bench/profile_worker.py --profile cprofile  # and the top functions by own CPU time
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
from qw_core.execution import AsyncioExecutor  # noqa: E402
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


class ThreadCpu:
    """Each thread's own CPU time over the run (``time.thread_time``): the worker's loop
    (this thread) and, for an ``async def`` target, its event loop's; with ``profile``, a
    cProfile of each by that clock."""

    def __init__(self, *, profile: bool) -> None:
        self.loop = 0.0
        self.main = 0.0
        self.profilers = [cProfile.Profile(time.thread_time) for _ in range(2)] if profile else []

    def run(self, worker: Worker) -> None:
        serve = AsyncioExecutor._serve
        loop_profiler = self.profilers[1] if self.profilers else None

        def timed_serve(executor: AsyncioExecutor) -> None:
            if loop_profiler is not None:
                loop_profiler.enable()
            began = time.thread_time()
            try:
                serve(executor)
            finally:
                self.loop = time.thread_time() - began
                if loop_profiler is not None:
                    loop_profiler.disable()

        AsyncioExecutor._serve = timed_serve  # type: ignore[method-assign]
        try:
            began = time.thread_time()
            if self.profilers:
                self.profilers[0].enable()
            worker.run()
            if self.profilers:
                self.profilers[0].disable()
            self.main = time.thread_time() - began
        finally:
            AsyncioExecutor._serve = serve  # type: ignore[method-assign]

    def report(self, jobs: int, redis_cpu: float, top: int) -> None:
        note = " (with the profiler's own)" if self.profilers else ""
        print(
            f"CPU µs/job: the worker's loop {1e6 * self.main / jobs:.0f}, its event loop "
            f"{1e6 * self.loop / jobs:.0f}, Redis {1e6 * redis_cpu / jobs:.0f}{note}"
        )
        for name, profiler in zip(("the worker's loop", "the event loop"), self.profilers, strict=False):
            if profiler is not self.profilers[0] and not self.loop:
                continue  # a plain function's jobs: no event loop ran
            print(f"\n-- {name}'s thread, by CPU time --")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


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
        threads = ThreadCpu(profile=args.profile == "cprofile")
        started = time.perf_counter()
        threads.run(worker)
        seconds = time.perf_counter() - started
        after = snapshot(client)
        jobs = task.done
        print(
            f"one worker: {jobs / seconds:,.0f} jobs/s over {jobs:,} jobs; "
            f"{(after.reads - before.reads) / jobs:.3f} round trips/job (INCR included), "
            f"{sum(after.commands.values()) / jobs:.2f} commands/job"
        )
        redis_cpu = after.cpu["redis"] - before.cpu["redis"]
        threads.report(jobs, redis_cpu, args.top)
        if prober is not None and probed is not None:
            figures = pgserver.per_job(probed, prober(), jobs)
            print(
                f"PostgreSQL: {figures['xacts_per_job']:.3f} write transactions/job, "
                f"{figures['wal_bytes_per_job']:,.0f} WAL bytes/job"
            )
            prober.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
