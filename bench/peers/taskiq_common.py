"""What the two taskiq adapters share: one task, the producer and the worker command.

The adapters differ only in their broker class (the list broker pops with BRPOP, the
stream broker acknowledges with XACK), so each builds its broker and hands it here.
"""

import os

from peers import common


def adapter(broker, module):
    """The task, ``Producer`` class, ``worker``, ``version`` and ``concurrency`` functions for ``broker``.

    :param module: the adapter module's name, for ``taskiq worker module:broker``.
    """

    @broker.task
    async def job(t=0):
        await common.async_task(t)

    class Producer:
        async def open(self):
            await broker.startup()

        async def send(self, t, queue="shared"):
            await job.kiq(t)

        async def close(self):
            await broker.shutdown()

    def worker(workers):
        argv = [common.tool("taskiq"), "worker", f"{module}:broker", "-w", str(workers), "--log-level", "WARNING"]
        os.execv(argv[0], argv)

    def version():
        return common.version("taskiq", "taskiq-redis", "redis", "hiredis")

    def concurrency():
        from taskiq.cli.worker.args import WorkerArgs

        tasks = WorkerArgs.__dataclass_fields__["max_async_tasks"].default  # what `taskiq worker` runs with
        return common.concurrency(tasks, f"max_async_tasks {tasks} (default)")

    return job, Producer, worker, version, concurrency
