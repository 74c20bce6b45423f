"""What every peer's task does, and the keys the harness watches.

The task is the same no-op for everyone: ``INCR bench:done`` on a redis-py client of its
own. A latency job carries the time it was queued (``t``, from ``time.time()``, one clock
for all processes of the host); its task first pushes ``now - t`` onto ``bench:lat``.

In I/O mode (``run.py --io MS``, which sets ``BENCH_IO_MS`` for the worker processes) each
job first waits MS milliseconds: ``time.sleep`` in a peer that runs plain functions
(``sync_task``), ``await asyncio.sleep`` in one that runs coroutines (``async_task``); then
the same ``INCR``: on the process's blocking client in a plain function, awaited on a
``redis.asyncio`` client of the event loop's own in a coroutine, as an async application
would (a blocking call there would stall every job in flight on that loop for a round
trip, so the drain would measure one ``INCR`` at a time, not the library).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref

import redis
import redis.asyncio

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: The PostgreSQL comparison (``run.py --backend postgres``): the peer's own database in the
#: harness's private cluster. The task's INCR still goes to the harness's private Redis.
PG_URL = os.environ.get("BENCH_PG_URL", "")
DONE = "bench:done"
LATENCY = "bench:lat"
#: The manager name qw runs under (its private queue is ``bench:jobs``).
QW_MANAGER = "bench"
#: I/O mode: how long each job waits, in seconds; None: the no-op task.
IO_WAIT: float | None = float(os.environ["BENCH_IO_MS"]) / 1000 if os.environ.get("BENCH_IO_MS") else None

_client: redis.Redis | None = None
_pid = 0


def client() -> redis.Redis:
    """This process's own client (a forked worker opens a new one)."""
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client, _pid = redis.Redis.from_url(URL), os.getpid()
    return _client


_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)


def async_client() -> redis.asyncio.Redis:
    """The running event loop's own asyncio client (its connections belong to that loop)."""
    loop = asyncio.get_running_loop()
    found = _async_clients.get(loop)
    if found is None:
        # A blocking pool: a peer with no limit on the jobs it runs at once (pgqueuer's
        # default) has its tasks wait for one of these connections rather than fail.
        pool = redis.asyncio.BlockingConnectionPool.from_url(URL, max_connections=1000, timeout=None)
        found = _async_clients[loop] = redis.asyncio.Redis(connection_pool=pool)
    return found


def task(t: float = 0) -> None:
    """The benchmark job: count it; report how late it started if it carries a time."""
    if t:
        started = time.time()
        client().rpush(LATENCY, started - t)
    client().incr(DONE)


def sync_task(t: float = 0) -> None:
    """The task of a peer whose jobs are plain functions: in I/O mode ``time.sleep`` first."""
    if IO_WAIT is not None:
        time.sleep(IO_WAIT)
    task(t)


async def async_task(t: float = 0) -> None:
    """The task of a peer whose jobs are coroutines: in I/O mode ``await asyncio.sleep``
    first, and the ``INCR`` awaited (the no-op mode keeps the blocking one of every peer)."""
    if IO_WAIT is None:
        task(t)
        return
    await asyncio.sleep(IO_WAIT)
    if t:
        await async_client().rpush(LATENCY, time.time() - t)
    await async_client().incr(DONE)


def concurrency(per_process: int, setting: str) -> dict[str, object]:
    """What ``concurrency()`` in an adapter returns: jobs a worker process runs at once, and how."""
    return {"per_process": per_process, "setting": setting}


def version(*dists: str) -> str:
    """``name version`` of each distribution, for the table."""
    from importlib import metadata

    parts = []
    for dist in dists:
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def run_processes(argvs: list[list[str]]) -> None:
    """Start one process per argv and wait for them all (the harness stops them)."""
    import subprocess

    children = [subprocess.Popen(argv) for argv in argvs]
    for child in children:
        child.wait()


def tool(name: str) -> str:
    """The console script ``name`` of the running virtualenv."""
    import sys
    from pathlib import Path

    return str(Path(sys.executable).with_name(name))
