"""procrastinate: 2 x ``procrastinate worker`` with its default ``--concurrency`` (1) for the
no-op jobs; in I/O mode ``--concurrency 10`` (see ``concurrency()``).

The task is a coroutine (procrastinate's recommended way; a plain function would run in a
thread of its own). Jobs are queued with ``defer_async``, in bulk with ``batch_defer_async``
(1,000 a call). ``setup`` applies procrastinate's schema (``procrastinate schema --apply``).
Everything else is procrastinate's default: finished jobs stay in its table as succeeded
(``--delete-jobs`` is not given), LISTEN/NOTIFY with its 5 s safety poll.
"""

import os
import subprocess

import procrastinate

from peers import common

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=common.PG_URL))
APP = "peers.procrastinate_peer.app"
#: I/O mode: jobs one worker process runs at once (its default, 1, otherwise).
IO_CONCURRENCY = 10


@app.task(name="bench", queue="bench")
async def job(t=0):
    await common.async_task(t)


def version():
    return common.version("procrastinate", "psycopg", "redis", "hiredis")


def concurrency():
    if common.IO_WAIT is None:
        return common.concurrency(1, "--concurrency 1 (default)")
    return common.concurrency(IO_CONCURRENCY, f"--concurrency {IO_CONCURRENCY} (default 1)")


def setup():
    subprocess.run([common.tool("procrastinate"), f"--app={APP}", "schema", "--apply"], check=True)


class Producer:
    async def open(self):
        await app.open_async()

    async def send(self, t, queue="shared"):
        await job.defer_async(t=t)

    async def send_many(self, n):
        for start in range(0, n, 1000):
            await job.batch_defer_async(*({"t": 0} for _ in range(min(1000, n - start))))

    async def close(self):
        await app.close_async()


def worker(workers):
    per_process = concurrency()["per_process"]
    argv = [common.tool("procrastinate"), f"--app={APP}", "--log-level", "warning", "worker"]
    argv += ["--concurrency", str(per_process)]
    if workers == 1:
        os.execv(argv[0], argv)
    common.run_processes([argv] * workers)
