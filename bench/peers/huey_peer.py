"""huey: ``huey_consumer -k process -w N`` on RedisHuey (blocking pops).

In I/O mode (``BENCH_IO_MS`` set): N ``huey_consumer -k thread -w 8`` processes instead,
huey's default worker type, which its documentation recommends over processes unless the
work is CPU-bound (threads switch while one waits), with the 8 threads of its own examples;
all but the first with ``-n`` (no periodic tasks), as its documentation says for several
consumers.
"""

import os

from huey import RedisHuey

from peers import common

huey = RedisHuey("bench", url=common.URL, blocking=True)
#: Threads a consumer process runs in I/O mode.
IO_THREADS = 8


def version():
    return common.version("huey", "redis", "hiredis")


@huey.task()
def job(t=0):
    common.sync_task(t)


def concurrency():
    if common.IO_WAIT is not None:
        return common.concurrency(IO_THREADS, f"{IO_THREADS} threads (-k thread -w {IO_THREADS})")
    return common.concurrency(1, "1 (-k process)")


class Producer:
    def send(self, t, queue="shared"):
        job(t)


def worker(workers):
    if common.IO_WAIT is not None:
        argv = [common.tool("huey_consumer"), "peers.huey_peer.huey", "-k", "thread", "-w", str(IO_THREADS)]
        common.run_processes([[*argv, "-q", *(["-n"] if i else [])] for i in range(workers)])
        return
    argv = [common.tool("huey_consumer"), "peers.huey_peer.huey", "-k", "process", "-w", str(workers), "-q"]
    os.execv(argv[0], argv)
