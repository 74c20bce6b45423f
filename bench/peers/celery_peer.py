"""celery: ``celery worker -P prefork -c N`` on the Redis transport, results ignored."""

import os

from celery import Celery

from peers import common

app = Celery("bench", broker=common.URL)
app.conf.task_ignore_result = True


def version():
    return common.version("celery", "kombu", "redis", "hiredis")


@app.task
def job(t=0):
    common.sync_task(t)


def concurrency():
    return common.concurrency(1, "1 (prefork, -c 2)")


class Producer:
    def send(self, t, queue="shared"):
        job.delay(t)


def worker(workers):
    argv = [common.tool("celery"), "-A", "peers.celery_peer", "worker", "-P", "prefork", "-c", str(workers)]
    argv += ["-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    os.execv(argv[0], argv)
