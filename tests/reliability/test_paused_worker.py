"""A worker paused (SIGSTOP, a debugger, a VM freeze) past its heartbeat TTL is reaped: the
jobs it held, prefetched ones included, go to other workers. When it comes back, only the
job it had in hand may run twice; the prefetched jobs it was merely holding must not
(issue 10, item 8).

The worker runs in a thread on a private redis-server, on a fake clock: the pause is the
test's target blocking while the test reaps the worker and another worker takes its jobs,
then moving the clock on, as a SIGSTOP would.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from reliability_support import assert_each_job_in_one_place, queue

from qw_core import PluginConfig, make_plugin_manager
from qw_core.models import Job
from qw_core.worker import Worker
from qw_redis import RedisBroker

pytestmark = [pytest.mark.redis]


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_resumed_worker_runs_only_the_job_it_had_in_hand(url: str, client: redis.Redis) -> None:
    # Batches grow 1, 2, 4 on a deep queue of quick jobs (the fake clock never moves while
    # they run): the fourth job starts a batch with three more waiting behind it.
    jobs = [Job.new({"n": n}) for n in range(7)]
    job_ids = queue(url, jobs)
    clock = FakeClock()
    in_hand, resume = threading.Event(), threading.Event()
    ran: list[int] = []

    def target(job_id: str, data: Any) -> None:
        ran.append(data["n"])
        if data["n"] == 3:
            in_hand.set()
            assert resume.wait(20)

    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    broker = RedisBroker.from_url(url)
    # The worker's next take after the pause: it has dealt with the rest of its batch.
    took_again = threading.Event()
    take = broker.take

    def take_and_tell(**kwargs: Any) -> list[Job]:
        if resume.is_set():
            took_again.set()
        return take(**kwargs)

    broker.take = take_and_tell  # type: ignore[method-assign]
    worker = Worker(broker, target, manager="pw", name="pw.1", hook=hook, block_timeout=0.05, clock=clock)
    thread = threading.Thread(target=worker.run)
    thread.start()
    other = RedisBroker.from_url(url)
    try:
        assert in_hand.wait(20)
        assert client.lrange("pw.1:jobs", 0, -1)[-4:] == job_ids[3:], "job 3 in hand, 4 to 6 waiting"
        # Paused past its TTL: a reaper hands everything it held to another worker.
        assert other.recover_worker(manager="pw", worker="pw.1") == 4
        taken = other.take(manager="pw", worker="pw.2", limit=10)
        assert [job.data["n"] for job in taken] == [3, 4, 5, 6]  # type: ignore[index]
        other.finish_jobs(worker="pw.2", job_ids=[job.id for job in taken])
        clock.now += 60  # the pause, as the worker's monotonic clock sees it
        resume.set()
        assert took_again.wait(20), "the worker went on to take again"
        worker.request_stop()
        thread.join(20)
        assert not thread.is_alive()
    finally:
        resume.set()
        worker.request_stop()
        other.close()
        broker.close()
    assert ran == [0, 1, 2, 3], "jobs 4 to 6 ran elsewhere; only 3, in hand at the pause, ran twice"
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}


def test_jobs_still_held_after_a_long_job_run_as_usual(url: str, client: redis.Redis) -> None:
    # The same long gap without a reaper: the worker checks, still holds them, runs them.
    jobs = [Job.new({"n": n}) for n in range(7)]
    job_ids = queue(url, jobs)
    clock = FakeClock()
    ran: list[int] = []
    done = threading.Event()

    def target(job_id: str, data: Any) -> None:
        ran.append(data["n"])
        if data["n"] == 3:
            clock.now += 60
        if len(ran) == 7:
            done.set()

    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    broker = RedisBroker.from_url(url)
    worker = Worker(broker, target, manager="pw", name="pw.1", hook=hook, block_timeout=0.05, clock=clock)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert done.wait(20)
    finally:
        worker.request_stop()
        thread.join(20)
        broker.close()
    assert ran == list(range(7))
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}
