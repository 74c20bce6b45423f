"""dramatiq: ``dramatiq -p N`` (N processes, dramatiq's default 8 worker threads each) on its Redis broker."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from peers import common

dramatiq.set_broker(RedisBroker(url=common.URL))


def version():
    return common.version("dramatiq", "redis", "hiredis")


@dramatiq.actor
def job(t=0):
    common.sync_task(t)


def concurrency():
    from dramatiq.cli import make_argument_parser

    threads = make_argument_parser().parse_args([__name__]).threads  # what `dramatiq` runs with
    return common.concurrency(threads, f"{threads} threads (default)")


class Producer:
    def send(self, t, queue="shared"):
        job.send(t)


def worker(workers):
    argv = [common.tool("dramatiq"), "peers.dramatiq_peer", "--processes", str(workers)]
    os.execv(argv[0], argv)
