"""huey: ``huey_consumer -k process -w N`` on RedisHuey (blocking pops)."""

import os

from huey import RedisHuey

from peers import common

huey = RedisHuey("bench", url=common.URL, blocking=True)


def version():
    return common.version("huey", "redis", "hiredis")


@huey.task()
def job(t=0):
    common.task(t)


class Producer:
    def send(self, t, queue="shared"):
        job(t)


def worker(workers):
    argv = [common.tool("huey_consumer"), "peers.huey_peer.huey", "-k", "process", "-w", str(workers), "-q"]
    os.execv(argv[0], argv)
