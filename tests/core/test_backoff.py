"""The back-off between attempts at an unreachable broker: growing, capped, jittered, and
never a busy loop (qw_core.backoff, and the worker and manager threads that use it); and
the few attempts a worker gives a broker error that is no outage."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from qwtest_wait import wait_for

from qw_core import Job, PluginConfig, RetryPolicy, make_plugin_manager
from qw_core.backoff import Backoff
from qw_core.errors import BackendError, BrokerUnavailable
from qw_core.liveness import Liveness, LivenessSettings
from qw_core.memory import MemoryBroker
from qw_core.worker import ERROR_ATTEMPTS, Worker


def test_waits_grow_from_first_to_cap_each_within_the_upper_half_of_its_window() -> None:
    random.seed(7)
    backoff = Backoff(first=0.1, cap=2.0)
    windows = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    for window in windows:
        wait = backoff.next()
        assert window / 2 <= wait <= window
    assert backoff.failures == len(windows)
    backoff.reset()
    assert backoff.failures == 0
    assert 0.05 <= backoff.next() <= 0.1


def test_waits_are_jittered_so_that_many_processes_spread_out() -> None:
    waits = {round(Backoff(first=1.0, cap=1.0).next(), 6) for _ in range(50)}
    assert len(waits) > 40
    assert all(0.5 <= wait <= 1.0 for wait in waits)


def test_a_long_outage_never_overflows() -> None:
    backoff = Backoff(first=0.1, cap=2.0, failures=10_000)
    assert 1.0 <= backoff.next() <= 2.0


class Unreachable(MemoryBroker):
    """A broker whose every take fails as an outage would; counts the attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def take(self, **kwargs: Any) -> list[Any]:
        self.attempts += 1
        raise BrokerUnavailable("cannot reach the broker")


def test_a_worker_waits_out_an_outage_without_a_busy_loop() -> None:
    broker = Unreachable()
    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    worker = Worker(broker, lambda job_id, data: None, manager="m", name="m.1", hook=hook)
    thread = threading.Thread(target=worker.run)
    thread.start()
    time.sleep(1.5)  # the outage: how often the worker tries in it is what is measured
    worker.request_stop()
    thread.join(10)
    assert not thread.is_alive(), "a stop request ends the wait"
    # Waits of 0.05-0.1, 0.1-0.2, 0.2-0.4, 0.4-0.8, ... s: at most 6 attempts in 1.5 s.
    assert 2 <= broker.attempts <= 6


class Refusing(MemoryBroker):
    """A broker whose every call of the method a subclass points at :meth:`refuse` fails
    with an error that is no outage (a key of the wrong type, say: it may never go away);
    counts the attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def refuse(self, **kwargs: Any) -> bool:
        self.attempts += 1
        raise BackendError("WRONGTYPE qw:failed is a string, not a zset")


class RefusesToFail(Refusing):
    fail_job = Refusing.refuse  # type: ignore[assignment]


class RefusesToRetry(Refusing):
    retry_job = Refusing.refuse  # type: ignore[assignment]


def run_a_failing_job_until_the_worker_gives_up(broker: Refusing, plugins: PluginConfig) -> tuple[Job, int]:
    """Queue one job whose target raises, run a worker on it until the worker ends; the
    job and how many errors ended the worker."""
    job = Job.new({"n": 1})
    broker.queue_job(job)

    def target(job_id: str, job_data: Any) -> None:
        raise ValueError("no")

    worker = Worker(broker, target, manager="m", name="m.1", hook=make_plugin_manager(plugins).hook)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BackendError as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: not thread.is_alive(), timeout=10, what="the worker to give up")
    finally:
        worker.request_stop()
        thread.join(10)
    return job, len(raised)


def test_a_worker_that_cannot_settle_a_job_gives_up_rather_than_hold_it_for_ever() -> None:
    broker = RefusesToFail()
    job, raised = run_a_failing_job_until_the_worker_gives_up(broker, PluginConfig(entry_points=False))
    assert broker.attempts == ERROR_ATTEMPTS + 1, "its tries, and one more as the worker stops"
    assert raised == 1, "the error ends the worker"
    # Its manager (or a reaper) puts the job back, counting a crash, so such a job ends
    # in the failed registry instead of being held by a worker that retries for ever.
    assert broker.held_job_ids("m.1") == [job.id]
    assert broker.workers("m") == ["m.1"], "it stays registered, so a reaper finds the job"


def test_a_worker_that_cannot_carry_out_a_retry_stops_and_stays_registered() -> None:
    # A retry is carried out at once (a failure for good waits for its batch): when it
    # cannot be, the worker ends with the job still held, and stays registered, so that
    # its manager or a reaper finds the job.
    broker = RefusesToRetry()
    plugins = PluginConfig(entry_points=False, retry=RetryPolicy(max_retries=3))
    job, raised = run_a_failing_job_until_the_worker_gives_up(broker, plugins)
    assert broker.attempts == ERROR_ATTEMPTS
    assert raised == 1
    assert broker.held_job_ids("m.1") == [job.id]
    assert broker.workers("m") == ["m.1"], "it stays registered, so a reaper finds the job"


def test_the_heartbeat_thread_waits_out_an_outage_without_a_busy_loop() -> None:
    opened = 0

    def factory() -> MemoryBroker:
        nonlocal opened
        opened += 1
        raise BrokerUnavailable("cannot reach the broker")

    settings = LivenessSettings(heartbeat=0.5, ttl=2.0)
    live = Liveness(factory, manager="m", token="t", settings=settings, workers=dict, on_reaped=print)
    live.start()
    time.sleep(1.5)
    live.stop()
    assert live.troubled, "an outage holds the reaper off"
    # Waits of 0.05-0.1, 0.1-0.2, 0.2-0.4, then at most the 0.5 s interval.
    assert 2 <= opened <= 8
