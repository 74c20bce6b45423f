"""A job hook that raises a BaseException (``sys.exit()`` in a plugin, a
``KeyboardInterrupt`` re-raised by one) in a concurrent worker.

``settle.notify`` and ``settle.decide`` catch ``Exception`` only. With one plain job at a
time the hook runs in the loop's thread: the SystemExit ends the worker, its manager puts
the job back (the worker never hangs). On threads, ``ThreadExecutor._serve`` catches
``Exception`` only too, so the job's thread dies silently: its completion is never
reported, the slot and the job stay taken for ever, and a warm stop never ends (the loop
waits for that flight). On an event loop, asyncio re-raises SystemExit out of
``run_forever``: the loop thread dies and every job in flight hangs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from qw_core import Job, PluginConfig, hookimpl, make_plugin_manager
from qw_core.memory import MemoryBroker
from qw_core.worker import Worker

WAIT = 5.0


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


class ExitOnSuccess:
    def __init__(self) -> None:
        self.fired = threading.Event()

    @hookimpl
    def qw_job_succeeded(self, job: Job, worker: Any, duration: float) -> None:
        self.fired.set()
        raise SystemExit(4)


def plain(job_id: str, job_data: Any) -> None:
    pass


async def coroutine(job_id: str, job_data: Any) -> None:
    await asyncio.sleep(0)


@pytest.mark.parametrize(("how", "target", "concurrency"), [("threads", plain, 2), ("async", coroutine, 2)])
def test_a_hook_raising_systemexit_does_not_leave_a_concurrent_worker_hanging(
    broker: MemoryBroker, how: str, target: Any, concurrency: int
) -> None:
    broker.queue_job(Job.new({"n": 1}))
    plugin = ExitOnSuccess()
    pm = make_plugin_manager(PluginConfig(entry_points=False), extra=(plugin,))
    worker = Worker(
        broker, target, manager="m", name="m.1", hook=pm.hook, concurrency=concurrency, block_timeout=0.2
    )
    ended = threading.Event()

    def run() -> None:
        try:
            worker.run()
        finally:  # returned or raised: the worker is not hanging
            ended.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert plugin.fired.wait(WAIT), "the job ran"
    worker.request_stop()
    assert ended.wait(WAIT), f"{how}: the worker hangs for ever on a job whose hook raised SystemExit"
