"""Suspects (docs/explanation/delivery.md, "A job kills its worker every time"): the jobs a worker had in hand
beside others when it died are put back marked, "and the worker that takes a suspect
next runs it alone ... A job that kills its process thus dies alone next time".

The mark lives in ``qw:suspects`` (memory: ``_State.suspects``) and the take that hands
the job out removes it. A worker that took a suspect but never started it (it waits for
the jobs in flight to end first) and then gives it back, on a stop (``release_jobs``),
hands it back unmarked: the next worker runs it beside others, and if it is the job that
kills processes, it takes innocent jobs down with it again instead of dying alone. (The
same happens when the worker dies or is killed as a last resort while the suspect waits
in its batch: the manager's ``in_hand`` does not list it, ``recover_worker`` does not
re-mark it.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from qwtest_wait import wait_for

from qw_core import Job, PluginConfig, make_plugin_manager
from qw_core.broker import Broker
from qw_core.memory import MemoryBroker
from qw_core.worker import Worker
from qw_redis import RedisBroker

WAIT = 10.0


@pytest.fixture(params=["memory", "fakeredis"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    broker: Broker = MemoryBroker() if request.param == "memory" else RedisBroker(fakeredis.FakeRedis())
    yield broker
    broker.close()


def test_a_suspect_given_back_unstarted_at_a_stop_is_still_a_suspect(broker: Broker) -> None:
    suspect = Job.new({"n": "suspect"})
    broker.queue_job(suspect)
    broker.register_worker(manager="m", worker="m.9")
    assert [job.id for job in broker.take(manager="m", worker="m.9", limit=1)] == [suspect.id]

    release = threading.Event()
    began: list[str] = []

    def target(job_id: str, job_data: Any) -> None:
        began.append(job_id)
        if job_data["n"] == "long":
            release.wait(WAIT)

    long_job = Job.new({"n": "long"})
    broker.queue_job(long_job)
    pm = make_plugin_manager(PluginConfig(entry_points=False))
    worker = Worker(
        broker.factory()(), target, manager="m", name="m.1", hook=pm.hook, concurrency=2, block_timeout=0.2
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: began == [long_job.id], timeout=WAIT, what="the long job to start")
        # m.9 died running the suspect beside another job: its manager puts it back marked.
        broker.recover_worker(manager="m", worker="m.9", suspects=[suspect.id])
        wait_for(
            lambda: suspect.id in broker.held_job_ids("m.1"),
            timeout=WAIT,
            what="m.1 to take the suspect (it waits for the long job before running it alone)",
        )
        assert began == [long_job.id], "the suspect waits"
        worker.request_stop()
    finally:
        release.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert began == [long_job.id], "the suspect never ran on m.1"
    [again] = broker.take(manager="m", worker="m.2", limit=1)
    assert again.id == suspect.id
    assert again.suspect, "given back at a stop, the suspect lost its mark: it will run beside others"
