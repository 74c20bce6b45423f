"""Profile one qw worker draining a deep queue, in this process (no manager, no fork).

    python bench/profile_worker.py                     # jobs/s of one worker, no profiler
    python bench/profile_worker.py --profile cprofile  # and the top functions by own time
    python bench/profile_worker.py --prefetch 10 --jobs 50000

Starts its own redis-server (like ``run.py``), queues ``--jobs`` benchmark jobs with
``queue_jobs``, then runs :class:`qw_core.worker.Worker` with the default plugins until
they are all done, and prints the rate and the Redis round trips per job (the task's INCR
included). What one worker costs per job is what limits a box whose cores are shared
by the workers and Redis.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import private_redis, snapshot, url_of  # noqa: E402

from qw_core import Job  # noqa: E402
from qw_core.worker import Worker  # noqa: E402
from qw_redis import RedisBroker  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=None, help="default: the Worker's default")
    parser.add_argument("--profile", choices=["none", "cprofile"], default="none")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-incr", action="store_true", help="a target that does not touch Redis")
    parser.add_argument("--redis-server", default="redis-server")
    args = parser.parse_args()
    with private_redis(args.redis_server) as client:
        url = url_of(client)
        producer = RedisBroker.from_url(url)
        producer.queue_jobs([Job.new({"t": 0}) for _ in range(args.jobs)])
        producer.close()
        counter = RedisBroker.from_url(url)._client  # the task's own connection
        done = 0
        worker: Worker

        def target(job_id: str, job_data: Any) -> None:
            nonlocal done
            if not args.no_incr:
                counter.incr("bench:done")
            done += 1
            if done == args.jobs:
                worker.request_stop()

        kwargs = {} if args.prefetch is None else {"prefetch": args.prefetch}
        worker = Worker(RedisBroker.from_url(url), target, manager="bench", block_timeout=0.1, **kwargs)
        client.config_resetstat()
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
        jobs = done
        print(
            f"one worker: {jobs / seconds:,.0f} jobs/s over {jobs:,} jobs; "
            f"{(after.reads - before.reads) / jobs:.3f} round trips/job (INCR included), "
            f"{sum(after.commands.values()) / jobs:.2f} commands/job"
        )
        if profiler is not None:
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
