"""Batching in the worker loop: how many jobs each take asks for, and when finished jobs are settled.

A worker asks for more than one job only while the queue is deep and its jobs are quick;
a quick job finished while others of its batch wait is finished by the next take (one
round trip for the batch); a slow one is finished at once. The worker runs on a fake
clock that moves only when a job says so, so how long a job takes is exact, whatever the
machine is doing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from qwtest_wait import wait_for

from qw_core import Job, PluginConfig, make_plugin_manager
from qw_core.memory import MemoryBroker
from qw_core.models import Failure
from qw_core.worker import DEFAULT_PREFETCH, Worker, _Batch

WAIT = 10.0


class SpyBroker(MemoryBroker):
    """Records each take (limit asked, ids it finished, jobs it gave), each finish call and
    each batch of failures written."""

    def __init__(self) -> None:
        super().__init__()
        self.takes: list[tuple[int, int, int]] = []
        self.finishes: list[list[str]] = []
        self.failure_batches: list[list[str]] = []
        self.calls: list[str] = []  # "take", "finish", "fail", in order

    def fail_jobs(self, *, worker: str, failures: Sequence[tuple[Job, Failure]], **kwargs: Any) -> list[bool]:
        self.calls.append("fail")
        self.failure_batches.append([job.id for job, _ in failures])
        return super().fail_jobs(worker=worker, failures=failures, **kwargs)

    def take(self, **kwargs: Any) -> list[Job]:
        jobs = super().take(**kwargs)
        self.calls.append("take")
        self.takes.append((kwargs["limit"], len(kwargs.get("finished", ())), len(jobs)))
        return jobs

    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        self.calls.append("finish")
        self.finishes.append(list(job_ids))
        return super().finish_jobs(worker=worker, job_ids=job_ids, keep_finished=keep_finished)


class FakeClock:
    """A monotonic clock that moves only when a job says it took time."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_jobs(
    broker: SpyBroker,
    count: int,
    seconds: Callable[[int], float],
    fails: Callable[[int], bool] = lambda n: False,
    **kwargs: Any,
) -> Worker:
    """Queue ``count`` jobs and run a worker in this thread until it has run them all; job
    ``n`` (counting from 1, in the order they run) takes ``seconds(n)`` on the worker's clock,
    then raises if ``fails(n)``."""
    broker.queue_jobs([Job.new({"n": n}) for n in range(count)])
    done = 0
    clock = FakeClock()
    worker: Worker

    def target(job_id: str, job_data: Any) -> None:
        nonlocal done
        done += 1
        clock.now += seconds(done)
        if done == count:
            worker.request_stop()
        if fails(done):
            raise ValueError(f"job {done} fails")

    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    worker = Worker(
        broker, target, manager="m", name="m.1", hook=hook, block_timeout=0.01, clock=clock, **kwargs
    )
    worker.run()
    return worker


def test_the_default_prefetch_is_small_but_batches() -> None:
    assert 1 < DEFAULT_PREFETCH <= 32


def test_quick_jobs_on_a_deep_queue_are_taken_in_growing_batches_and_finished_by_takes() -> None:
    broker = SpyBroker()
    run_jobs(broker, 60, lambda n: 0.001, prefetch=8)
    limits = [limit for limit, _, _ in broker.takes]
    assert limits[:5] == [1, 2, 4, 8, 8]
    assert max(got for _, _, got in broker.takes) == 8
    # Every job but the last batch's was finished by the take after it: no separate call.
    finished_by_takes = sum(count for _, count, _ in broker.takes)
    finished_apart = sum(len(ids) for ids in broker.finishes)
    assert finished_by_takes + finished_apart == 60
    assert len(broker.finishes) <= 1  # the final flush when the worker stops
    assert broker.held_job_ids("m.1") == []
    assert broker.queued_job_ids() == []


def test_the_failures_of_a_batch_are_written_together_before_the_next_take() -> None:
    broker = SpyBroker()
    run_jobs(broker, 60, lambda n: 0.001, fails=lambda n: n % 3 == 0, prefetch=8)
    written = [job_id for batch in broker.failure_batches for job_id in batch]
    assert len(written) == len(set(written)) == 20, "each failure written once"
    assert {entry.job.id for entry in broker.failed_jobs(limit=100)} == set(written)
    assert max(len(batch) for batch in broker.failure_batches) > 1, "several in one call"
    assert len(broker.failure_batches) < len(broker.takes), "at most one call per take"
    calls = broker.calls
    assert calls.index("fail") < len(calls) - 3, "failures are written as the batches go, not at the end"
    assert broker.held_job_ids("m.1") == []


def test_a_failure_waits_no_longer_than_a_succeeded_job_would() -> None:
    broker = SpyBroker()
    # Job 8 (the first of a batch of 4) fails, then job 9 takes long: once job 9 ends, the
    # failure is written at once, with job 9's finish, while jobs 10 and 11 still wait.
    slow = 1.5 * Worker.finish_delay
    run_jobs(broker, 20, lambda n: slow if n == 9 else 0.001, fails=lambda n: n == 8, prefetch=4)
    assert len(broker.failure_batches) == 1
    assert broker.calls.count("fail") == 1
    at = broker.calls.index("fail")
    assert broker.calls[at + 1] == "finish", "written with the late batch's finish, not the next take"
    assert broker.finishes[0] == [broker.finishes[0][0]], "which finished the slow job alone"


def test_slow_jobs_are_taken_one_at_a_time() -> None:
    broker = SpyBroker()
    run_jobs(broker, 6, lambda n: 2 * Worker.finish_delay, prefetch=8)
    assert {limit for limit, _, _ in broker.takes} == {1}
    assert len(broker.finishes) <= 1  # each finished by the next take; the last when it stops
    assert broker.queued_job_ids() == []


def test_a_slow_job_in_a_batch_is_finished_at_once() -> None:
    broker = SpyBroker()
    # Job 8 is the first of the batch of 4 that follows batches of 1, 2 and 4.
    run_jobs(broker, 20, lambda n: 1.5 * Worker.finish_delay if n == 8 else 0.001, prefetch=4)
    assert broker.finishes, "the slow job's batch should have been finished before the next take"
    assert broker.finishes[0] == [broker.finishes[0][0]], "the slow job alone, at once"
    assert [limit for limit, _, _ in broker.takes][:4] == [1, 2, 4, 4]


def test_with_jobs_in_flight_a_slow_job_is_finished_by_the_next_take_not_a_call_of_its_own() -> None:
    broker = SpyBroker()
    # Two jobs at once on threads, none waiting: each job that ends frees a slot, so the
    # loop takes next, and that take finishes it. A finish call of its own (it ran longer
    # than finish_delay) would be a second round trip for every job.
    run_jobs(broker, 12, lambda n: 2 * Worker.finish_delay, concurrency=2)
    last_take = len(broker.calls) - 1 - broker.calls[::-1].index("take")
    assert "finish" not in broker.calls[:last_take], broker.calls
    assert sum(count for _, count, _ in broker.takes) >= 10, "finished by the takes"
    assert broker.held_job_ids("m.1") == []
    assert broker.queued_job_ids() == []


def test_with_jobs_in_flight_quick_jobs_of_a_deep_queue_are_taken_beyond_the_free_slots() -> None:
    broker = SpyBroker()
    # One job runs on while quick ones go through the other slot: once the queue proved
    # deep, a take asks for the free slot and the batch's extra, which wait and start as
    # the slot frees, so a take carries several jobs instead of one (each take is a
    # transaction on PostgreSQL).
    release, stuck_runs, quick_done = threading.Event(), threading.Event(), threading.Event()
    stuck, quick = Job.new({"stuck": True}), [Job.new({"stuck": False}) for _ in range(60)]
    ran = 0

    def target(job_id: str, job_data: Any) -> None:
        nonlocal ran
        if job_data["stuck"]:
            stuck_runs.set()
            release.wait(WAIT)
            return
        ran += 1
        if ran == len(quick):
            quick_done.set()

    broker.queue_jobs([stuck, *quick])
    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    worker = Worker(
        broker,
        target,
        manager="m",
        name="m.1",
        hook=hook,
        concurrency=2,
        prefetch=8,
        block_timeout=0.05,
        clock=FakeClock(),  # the jobs take no time, however busy the machine: the batch grows
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert stuck_runs.wait(WAIT)
        assert quick_done.wait(WAIT)
    finally:
        release.set()
        worker.request_stop()
        thread.join(WAIT)
    assert not thread.is_alive()
    limits = [limit for limit, _, _ in broker.takes]
    assert max(limits) == 8, "one free slot and the prefetch less one"
    assert len(broker.takes) < len(quick) / 3, limits
    assert broker.held_job_ids("m.1") == []
    assert broker.queued_job_ids() == []


def test_with_jobs_in_flight_slow_jobs_are_never_taken_beyond_the_free_slots() -> None:
    broker = SpyBroker()
    run_jobs(broker, 12, lambda n: 2 * Worker.finish_delay, concurrency=2, prefetch=8)
    assert max(limit for limit, _, _ in broker.takes) <= 2, broker.takes
    assert broker.queued_job_ids() == []


def test_a_job_that_ends_beside_one_that_runs_on_is_finished_without_waiting_for_it() -> None:
    broker = SpyBroker()
    release, stuck_runs = threading.Event(), threading.Event()
    quick, stuck = Job.new({"stuck": False}), Job.new({"stuck": True})

    def target(job_id: str, job_data: Any) -> None:
        if job_data["stuck"]:
            stuck_runs.set()
            release.wait(WAIT)

    broker.queue_jobs([stuck, quick])
    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    worker = Worker(broker, target, manager="m", name="m.1", hook=hook, concurrency=2, block_timeout=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert stuck_runs.wait(WAIT)
        wait_for(lambda: broker.get_job(quick.id) is None, what="the quick job to be finished")
        assert broker.held_job_ids("m.1") == [stuck.id]
    finally:
        release.set()
        worker.request_stop()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert broker.held_job_ids("m.1") == []


@pytest.mark.parametrize(
    ("limit", "taken", "elapsed", "expected"),
    [
        (1, 0, 0.0, 1),  # nothing came: ask for one
        (1, 1, 0.001, 2),  # a full, quick batch: double
        (8, 8, 0.001, 10),  # up to prefetch
        (10, 10, 0.001, 10),
        (8, 8, 0.5, 4),  # a full but slow batch: halve
        (1, 1, 0.5, 1),
        (8, 3, 0.001, 1),  # a short batch: the queue ran dry, back to one
    ],
)
def test_next_limit(limit: int, taken: int, elapsed: float, expected: int) -> None:
    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    worker = Worker(MemoryBroker(), lambda job_id, data: None, manager="m", hook=hook, prefetch=10)
    assert worker._next_limit(limit, taken, elapsed) == expected


@pytest.mark.parametrize(
    ("in_flight", "finished", "started_ago", "expected"),
    [
        (False, False, 0.0, 8),  # nothing in flight: the batch's limit
        (True, True, 0.01, 2 + 7),  # quick jobs finished: the free slots and the extra
        (True, True, 0.5, 2),  # jobs that ran long: the free slots only
        (True, False, 0.0, 2),  # nothing to finish: nothing tells the jobs are quick
    ],
)
def test_take_limit(in_flight: bool, finished: bool, started_ago: float, expected: int) -> None:
    clock = FakeClock()
    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    worker = Worker(MemoryBroker(), lambda i, d: None, manager="m", name="m.1", hook=hook, clock=clock)
    if in_flight:
        worker._flights[0] = object()  # type: ignore[assignment]
    batch = _Batch(limit=8, finished=["a"] if finished else [], deferred_since=clock.now - started_ago)
    assert worker._take_limit(batch, free=2) == expected
