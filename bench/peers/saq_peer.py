"""saq: ``saq settings --workers N``. Its "bulk" is what ``Queue.map`` does before waiting for
results: concurrent ``enqueue`` calls (here 1,000 at a time)."""

import asyncio
import os

from saq import Queue

from peers import common

queue = Queue.from_url(common.URL)


def version():
    return common.version("saq", "redis", "hiredis")


async def job(ctx, *, t=0):
    await common.async_task(t)


settings = {"queue": queue, "functions": [job], "concurrency": 10}


def concurrency():
    return common.concurrency(settings["concurrency"], f"concurrency {settings['concurrency']} (default)")


class Producer:
    async def open(self):
        await queue.connect()

    async def send(self, t, queue_name="shared"):
        await queue.enqueue("job", t=t)

    async def send_many(self, n):
        for start in range(0, n, 1000):
            await asyncio.gather(*(queue.enqueue("job", t=0) for _ in range(min(1000, n - start))))

    async def close(self):
        await queue.disconnect()


def worker(workers):
    argv = [common.tool("saq"), "peers.saq_peer.settings", "--workers", str(workers), "--quiet"]
    os.execv(argv[0], argv)
