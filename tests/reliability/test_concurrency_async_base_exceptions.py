"""An ``async def`` target that raises a BaseException of its own (``sys.exit()``,
``KeyboardInterrupt``) must fail its job like any error, and the worker must go on
(docs/explanation/delivery.md, "A target does what a job should not"; qw_core.worker's docstring).

With a time limit (``--job-timeout`` or ``meta["timeout"]``) the job's coroutine runs as
a task of its own (``qw_core.execution._within``); asyncio re-raises SystemExit and
KeyboardInterrupt out of ``run_forever``, which kills the executor's event loop thread:
every job in flight then hangs and nothing new ever runs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from qwtest_wait import wait_for
from worker_threads import start_worker, stop_worker

from qw_core import Job
from qw_core.memory import MemoryBroker


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


MISDEEDS = {
    "sys.exit": lambda: sys.exit(3),
    "KeyboardInterrupt": lambda: (_ for _ in ()).throw(KeyboardInterrupt()),
}


async def misbehave(job_id: str, job_data: Any) -> None:
    await asyncio.sleep(0.01)
    if job_data.get("misdeed"):
        MISDEEDS[job_data["misdeed"]]()
    await asyncio.sleep(0.05)


@pytest.mark.parametrize("misdeed", sorted(MISDEEDS))
def test_an_async_job_under_a_time_limit_that_raises_a_base_exception_fails_alone_and_the_worker_goes_on(
    broker: MemoryBroker, misdeed: str
) -> None:
    bad = Job.new({"misdeed": misdeed}, meta={"timeout": 30})
    siblings = [Job.new({"n": n}, meta={"timeout": 30}) for n in range(3)]
    later = [Job.new({"n": n}) for n in range(3, 6)]
    broker.queue_jobs([bad, *siblings, *later])
    worker, thread = start_worker(broker, misbehave, concurrency=4)
    try:
        [failed] = wait_for(broker.failed_jobs, timeout=10, what=f"the job that raised {misdeed} to fail")
        wait_for(
            lambda: not broker.queued_job_ids() and not broker.held_job_ids("m.1"),
            timeout=10,
            what="its siblings and the jobs queued after it to run",
        )
    finally:
        stop_worker(worker, thread, timeout=5)
    assert failed.job.id == bad.id
    assert failed.failure.exc_type in {
        "SystemExit",
        "builtins.SystemExit",
        "KeyboardInterrupt",
        "builtins.KeyboardInterrupt",
    }
    assert not thread.is_alive(), "the worker stopped"
