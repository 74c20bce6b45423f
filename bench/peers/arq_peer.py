"""arq: N processes of ``arq WorkerSettings``, polling every 10 ms (arq polls; default 0.5 s)."""

from arq import create_pool
from arq.connections import RedisSettings

from peers import common

SETTINGS = RedisSettings.from_dsn(common.URL)


def version():
    return common.version("arq", "redis", "hiredis")


async def job(ctx, t=0):
    await common.async_task(t)


class WorkerSettings:
    functions = [job]
    redis_settings = SETTINGS
    poll_delay = 0.01
    log_results = False


def concurrency():
    import inspect

    from arq.worker import Worker

    default = inspect.signature(Worker).parameters["max_jobs"].default
    jobs = getattr(WorkerSettings, "max_jobs", default)
    return common.concurrency(jobs, f"max_jobs {jobs} (default)")


class Producer:
    async def open(self):
        self.pool = await create_pool(SETTINGS)

    async def send(self, t, queue="shared"):
        await self.pool.enqueue_job("job", t)

    async def close(self):
        await self.pool.aclose()


def worker(workers):
    common.run_processes([[common.tool("arq"), "peers.arq_peer.WorkerSettings"]] * workers)
