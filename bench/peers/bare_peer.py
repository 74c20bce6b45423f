"""bare: no queue library at all, the reference row of the I/O comparison (``--io`` only).

The jobs are bare strings (the time they were queued, ``t``) on one Redis list; each of N
processes runs one event loop (uvloop when it is installed, as qw and taskiq do) that
pops as many as it has free slots with one ``LPOP key count`` and runs the same task as
every peer, up to :data:`PER_PROCESS` at once. Nothing is acknowledged, retried, hooked,
logged or recorded: a job popped by a process that dies is gone. It is what this machine
allows any Python queue for this task with this many jobs in flight: its drain is the
ceiling the others are measured against, not a peer to pick.
"""

from __future__ import annotations

import asyncio
import sys

import redis
import redis.asyncio

from peers import common

#: The list the jobs wait on.
KEY = "bench:bare"
#: Jobs awaited at once in each process, as qw's and taskiq's defaults.
PER_PROCESS = 100
#: Jobs queued per round trip by ``send_many``.
CHUNK = 1000


def version():
    return common.version("redis", "hiredis", "uvloop")


def concurrency():
    return common.concurrency(PER_PROCESS, f"{PER_PROCESS} tasks (no queue library: LPOP into tasks)")


class Producer:
    def __init__(self):
        self.client = redis.Redis.from_url(common.URL)

    def send(self, t, queue="shared"):
        self.client.rpush(KEY, repr(t))

    def send_many(self, n):
        while n > 0:
            chunk = min(n, CHUNK)
            self.client.rpush(KEY, *(["0"] * chunk))
            n -= chunk

    def close(self):
        self.client.close()


async def serve() -> None:
    """Pop jobs for the free slots (block for one when the list is empty) and run them."""
    client = redis.asyncio.Redis.from_url(common.URL)
    free = PER_PROCESS
    slot_freed = asyncio.Event()
    running: set[asyncio.Task[None]] = set()

    async def run(t: float) -> None:
        nonlocal free
        try:
            await common.async_task(t)
        finally:
            free += 1
            slot_freed.set()

    while True:
        if not free:
            slot_freed.clear()
            await slot_freed.wait()
            continue
        items = await client.lpop(KEY, free)
        if not items:
            popped = await client.blpop([KEY], timeout=1)
            if popped is None:
                continue
            items = [popped[1]]
        for item in items:
            free -= 1
            task = asyncio.create_task(run(float(item)))
            running.add(task)
            task.add_done_callback(running.discard)


def main() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


def worker(workers):
    common.run_processes([[sys.executable, "-m", "peers.bare_peer"] for _ in range(workers)])


if __name__ == "__main__":
    main()
