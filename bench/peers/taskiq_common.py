"""What the two taskiq adapters share: one task, the producer and the worker command.

The adapters differ only in their broker class (the list broker pops with BRPOP, the
stream broker acknowledges with XACK), so each builds its broker and hands it here.
"""

import os

from peers import common


def adapter(broker, module):
    """The task, ``Producer`` class, ``worker`` and ``version`` functions for ``broker``.

    :param module: the adapter module's name, for ``taskiq worker module:broker``.
    """

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
        argv = [common.tool("taskiq"), "worker", f"{module}:broker", "-w", str(workers), "--log-level", "WARNING"]
        os.execv(argv[0], argv)

    def version():
        return common.version("taskiq", "taskiq-redis", "redis", "hiredis")

    return job, Producer, worker, version
