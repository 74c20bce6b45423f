"""rq: ``rq worker-pool -n N`` of ``SimpleWorker`` (no fork per job: rq's fastest worker)."""

import os

from redis import Redis
from rq import Queue

from peers import common


def version():
    return common.version("rq", "redis", "hiredis")


def job(t=0):
    common.sync_task(t)


def concurrency():
    return common.concurrency(1, "1 (SimpleWorker)")


class Producer:
    def __init__(self):
        self.queue = Queue("default", connection=Redis.from_url(common.URL))

    def send(self, t, queue="shared"):
        self.queue.enqueue(job, t)

    def send_many(self, n):
        self.queue.enqueue_many([Queue.prepare_data(job, args=(0,)) for _ in range(n)])


def worker(workers):
    argv = [common.tool("rq"), "worker-pool", "-n", str(workers), "-w", "rq.worker.SimpleWorker"]
    os.execv(argv[0], [*argv, "-u", common.URL, "-l", "WARNING", "default"])
