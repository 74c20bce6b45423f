"""A take whose reply is lost while the worker has jobs in flight.

Broker.take's contract: ``held`` are "exactly the ids worker has taken and not settled
yet ...; they are not handed out again. A backend may rely on their number alone. Ids on
the held list that the worker never saw (a reply lost to a connection error) are handed
out again by a later take."

take.lua relies on the number alone: it takes the last ``len(held)`` entries of
``<w>:jobs`` to be the jobs in flight and hands out, as "leftovers", the entries before
them that have an origin entry. A take whose reply was lost appended its jobs *after*
the jobs in flight, so the next take (qw's own retry, or redis-py re-sending the
EVALSHA on a new connection) counts the lost jobs as held and hands out the oldest job
in flight instead: the same job runs twice at once in one worker, and the lost job waits
until the worker's flights drain. Before concurrency a worker only took with nothing in
flight (``held`` empty), so the count was always right. The memory broker goes by the
ids and gets it right.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
from qwtest_wait import wait_for

from qw_core import Job, PluginConfig, make_plugin_manager
from qw_core.broker import Broker
from qw_core.memory import MemoryBroker
from qw_core.worker import Worker
from qw_redis import RedisBroker

WAIT = 10.0


@pytest.fixture(params=["memory", "fakeredis", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == "memory":
        broker: Broker = MemoryBroker()
    elif request.param == "fakeredis":
        broker = RedisBroker(fakeredis.FakeRedis())
    else:
        broker = RedisBroker.from_url(request.getfixturevalue("url"))
    yield broker
    broker.close()


def test_a_later_take_hands_out_the_jobs_of_a_lost_reply_and_never_a_job_in_flight(broker: Broker) -> None:
    first, lost, third = (Job.new({"n": n}) for n in range(3))
    broker.queue_jobs([first, lost, third])
    [in_flight] = broker.take(manager="m", worker="m.1", limit=1)
    assert in_flight.id == first.id
    # The worker takes again with `first` in flight; Redis runs it, the reply is lost.
    broker.take(manager="m", worker="m.1", held=[first.id], limit=1)
    again = broker.take(manager="m", worker="m.1", held=[first.id], limit=1)
    assert [job.id for job in again] != [first.id], "the job in flight was handed out a second time"
    assert [job.id for job in again] == [lost.id], "the job of the lost reply is handed out again"


def test_a_concurrent_worker_whose_take_reply_is_lost_runs_no_job_twice(url: str) -> None:
    """The whole worker: one job in flight on a thread, a take whose reply is lost (Redis
    ran it; the client saw a connection error), then the worker's next take."""
    broker = RedisBroker.from_url(url)
    gate = threading.Event()
    began: Counter[str] = Counter()
    lock = threading.Lock()

    def target(job_id: str, job_data: Any) -> None:
        with lock:
            began[job_id] += 1
        if job_data["n"] == 0:
            gate.wait(WAIT)

    real_take = broker._scripts.take
    armed = threading.Event()

    def losing_take(**kwargs: Any) -> Any:
        reply = real_take(**kwargs)
        if armed.is_set() and reply.taken:
            armed.clear()
            raise redis.ConnectionError("Connection closed by server.")  # the reply never came
        return reply

    broker._scripts.take = losing_take  # type: ignore[method-assign]
    long_job, next_job = Job.new({"n": 0}), Job.new({"n": 1})
    broker.queue_job(long_job)
    pm = make_plugin_manager(PluginConfig(entry_points=False))
    worker = Worker(broker, target, manager="m", name="m.1", hook=pm.hook, concurrency=2, block_timeout=0.2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    producer = RedisBroker.from_url(url)
    try:
        wait_for(lambda: began[long_job.id] == 1, timeout=WAIT, what="the long job to start")
        armed.set()
        producer.queue_job(next_job)
        wait_for(
            lambda: began[next_job.id] or began[long_job.id] > 1,
            timeout=WAIT,
            what="the next job to start (or the long one to start again)",
        )
        seen = dict(began)
    finally:
        gate.set()
        worker.request_stop()
        thread.join(WAIT)
        producer.close()
        broker.close()
    assert seen.get(long_job.id) == 1, f"the job in flight ran twice at once in one worker: {seen}"
    assert seen.get(next_job.id) == 1
