"""qw: ``qw run -w N`` (a manager and N worker processes) on the shared queue.

``BENCH_QW_PREFETCH`` sets ``--prefetch`` (unset: qw's default).
"""

import os
import sys

from qw_core import Job
from qw_redis import RedisBroker

from peers import common


def version():
    return common.version("qw-core", "qw-redis", "redis", "hiredis")


def target(job_id, job_data):
    common.task(job_data.get("t", 0))


class Producer:
    def __init__(self):
        self.broker = RedisBroker.from_url(common.URL)

    def send(self, t, queue="shared"):
        manager = common.QW_MANAGER if queue == "manager" else None
        self.broker.queue_job(Job.new({"t": t}, manager=manager))

    def send_many(self, n):
        self.broker.queue_jobs([Job.new({"t": 0}) for _ in range(n)])

    def close(self):
        self.broker.close()


def worker(workers):
    argv = [sys.executable, "-m", "qw_cli", "run", "-w", str(workers), "-n", common.QW_MANAGER]
    argv += ["-l", "warning", "--url", common.URL]
    if os.environ.get("BENCH_QW_PREFETCH"):
        argv += ["--prefetch", os.environ["BENCH_QW_PREFETCH"]]
    os.execv(sys.executable, [*argv, "peers.qw_peer:target"])
