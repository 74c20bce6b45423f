"""What every peer's task does, and the keys the harness watches.

The task is the same no-op for everyone: ``INCR bench:done``, so the harness knows how many
jobs ran. That count is the harness's instrument, not work, and it is made to cost as little
as a Redis command can: each process sends it on a connection of its own that has told the
server not to answer (``CLIENT REPLY OFF``), so counting a job is one ``send`` and no round
trip (redis-py's ``incr`` cost 76 µs of CPU and a round trip per job on this machine, more
than qw's own work per job, and the same for every peer: it hid the queues' differences).
Commands on one connection run in the order sent, so the count is exact. A latency job
carries the time it was queued (``t``, from ``time.time()``, one clock for all processes of
the host); its task first pushes ``now - t`` onto ``bench:lat`` the same way.

In I/O mode (``run.py --io MS``, which sets ``BENCH_IO_MS`` for the worker processes) each
job first waits MS milliseconds: ``time.sleep`` in a peer that runs plain functions
(``sync_task``), ``await asyncio.sleep`` in one that runs coroutines (``async_task``); then
the ``INCR`` as a job's own I/O, answered: on the process's redis-py client in a plain
function, awaited on a ``redis.asyncio`` client of the event loop's own in a coroutine, as an
async application would (a blocking call there would stall every job in flight on that loop for a round
trip, so the drain would measure one ``INCR`` at a time, not the library).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import weakref
from urllib.parse import urlsplit

import redis
import redis.asyncio

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Where the tasks count their jobs (``bench:done``, ``bench:lat``): a Redis of its own in
#: the no-op table (``run.py`` sets it), so the queue's server sees only the queue's work.
TALLY_URL = os.environ.get("BENCH_TALLY_URL") or URL
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
    """This process's own client of the counting server (a forked worker opens a new one)."""
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client, _pid = redis.Redis.from_url(TALLY_URL), os.getpid()
    return _client


_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)


def async_client() -> redis.asyncio.Redis:
    """The running event loop's own asyncio client of the counting server (its connections
    belong to that loop)."""
    loop = asyncio.get_running_loop()
    found = _async_clients.get(loop)
    if found is None:
        # A blocking pool: a peer with no limit on the jobs it runs at once (pgqueuer's
        # default) has its tasks wait for one of these connections rather than fail.
        pool = redis.asyncio.BlockingConnectionPool.from_url(TALLY_URL, max_connections=1000, timeout=None)
        found = _async_clients[loop] = redis.asyncio.Redis(connection_pool=pool)
    return found


def _command(*words: str) -> bytes:
    """One command in the Redis protocol (RESP)."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Tally:
    """A connection that sends commands and reads no answers (``CLIENT REPLY OFF``): one
    per process, shared by its threads under a lock (a command is one ``sendall``)."""

    _INCR_DONE = _command("INCR", DONE)

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(_command("SELECT", (parts.path or "/0").lstrip("/") or "0"))
        reply = self.sock.recv(64)
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"the benchmark's counter could not select its database: {reply!r}")
        self.sock.sendall(_command("CLIENT", "REPLY", "OFF"))
        self.lock = threading.Lock()

    def done(self, late: float | None) -> None:
        message = self._INCR_DONE if late is None else _command("RPUSH", LATENCY, repr(late)) + self._INCR_DONE
        with self.lock:
            self.sock.sendall(message)


_tally: _Tally | None = None
_tally_pid = 0


def tally() -> _Tally:
    """This process's counting connection (a forked worker opens its own; two threads that
    open one at once each count on their own, which is as exact)."""
    global _tally, _tally_pid
    found = _tally
    if found is None or _tally_pid != os.getpid():
        found = _Tally(TALLY_URL)
        _tally, _tally_pid = found, os.getpid()
    return found


def task(t: float = 0) -> None:
    """The benchmark's no-op job: count it, and report how late it started if it carries a
    time; both sent without waiting for an answer (see the module's docstring)."""
    tally().done(time.time() - t if t else None)


def sync_task(t: float = 0) -> None:
    """The task of a peer whose jobs are plain functions: in I/O mode ``time.sleep`` first,
    then the ``INCR`` on redis-py's client, answered, as an application's own I/O would be."""
    if IO_WAIT is None:
        task(t)
        return
    time.sleep(IO_WAIT)
    if t:
        client().rpush(LATENCY, time.time() - t)
    client().incr(DONE)


async def async_task(t: float = 0) -> None:
    """The task of a peer whose jobs are coroutines: in I/O mode ``await asyncio.sleep``
    first, and the ``INCR`` awaited (the no-op mode counts as every peer does: :func:`task`)."""
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
