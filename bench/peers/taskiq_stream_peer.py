"""taskiq with taskiq-redis's RedisStreamBroker (consumer group, XACK): ``taskiq worker -w N``."""

import os

from taskiq_redis import RedisStreamBroker

from peers import common

broker = RedisStreamBroker(common.URL)


def version():
    return common.version("taskiq", "taskiq-redis", "redis", "hiredis")


@broker.task
async def job(t=0):
    common.task(t)


class Producer:
    async def open(self):
        await broker.startup()

    async def send(self, t, queue="shared"):
        await job.kiq(t)

    async def close(self):
        await broker.shutdown()


def worker(workers):
    argv = [common.tool("taskiq"), "worker", f"{__name__}:broker", "-w", str(workers), "--log-level", "WARNING"]
    os.execv(argv[0], argv)
