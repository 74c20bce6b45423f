"""Task routers as the target of a real manager with worker processes, on the memory backend:
the same hooks, retries, time limits and failed registry as any target."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qwtest_wait import wait_for

from qw_core.manager import Manager
from qw_core.memory import MemoryBroker
from qw_core.models import Job
from qw_core.plugins import PluginConfig
from qwtest_targets import read_records, tasks

pytestmark = pytest.mark.slow

RECORDING = PluginConfig(modules=("qwtest_targets.plugin",), entry_points=False)


@pytest.fixture
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QWTEST_RECORD_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    monkeypatch.setattr(tasks.router, "broker", broker)
    monkeypatch.setattr(tasks.plain, "broker", broker)
    yield broker
    broker.close()


def run_manager(broker: MemoryBroker, target: str, **kwargs: Any) -> Manager:
    kwargs.setdefault("num_workers", 2)
    kwargs.setdefault("plugins", RECORDING)
    manager = Manager(target, broker, name="tasks", block_timeout=0.2, restart_backoff=(0.05, 1.0), **kwargs)
    manager.start()
    return manager


def stop(manager: Manager) -> None:
    manager.stop()
    assert manager.join(timeout=30)
    assert manager.error is None


def ran(records: Path) -> list[dict[str, Any]]:
    return read_records(records, "task")


def test_a_router_of_plain_and_async_tasks_runs_both_through_the_job_hooks(
    broker: MemoryBroker, records: Path
) -> None:
    adds = [tasks.add.enqueue(n, y=1) for n in range(20)]
    naps = [tasks.nap.enqueue(0.01, label=str(n)) for n in range(20)]
    manager = run_manager(broker, "qwtest_targets.tasks:router")
    try:
        wait_for(lambda: len(ran(records)) >= 40, what="40 task calls to run")
        wait_for(lambda: not broker.queued_job_ids(), what="the queue to drain")
    finally:
        stop(manager)
    rows = {row["job_id"]: row for row in ran(records)}
    assert Counter(row["job_id"] for row in ran(records)) == Counter({h.id: 1 for h in adds + naps})
    assert {rows[h.id]["x"] for h in adds} == set(range(20))
    assert {rows[h.id]["label"] for h in naps} == {str(n) for n in range(20)}
    assert all(rows[h.id]["thread"].startswith("qw-task") for h in adds), "plain tasks run on threads"
    assert all(rows[h.id]["thread"] == "qw-event-loop" for h in naps), "async tasks on the loop"
    hooks: dict[str, list[str]] = {}
    for row in read_records(records, "hook"):
        hooks.setdefault(row["job_id"], []).append(row["hook"])
    assert hooks == {h.id: ["started", "succeeded", "finished"] for h in adds + naps}
    assert broker.failed_jobs() == []


def test_a_task_retries_as_its_own_setting_says(broker: MemoryBroker, records: Path) -> None:
    succeeds = tasks.flaky.enqueue(3)  # the task's 2 retries: the third run succeeds
    fails = tasks.flaky.options(retry=1).enqueue(3)  # 1 retry for this call: fails
    manager = run_manager(broker, "qwtest_targets.tasks:router", num_workers=1)
    try:
        wait_for(lambda: len(broker.failed_jobs()) == 1, what="the call with one retry to fail")
        wait_for(lambda: len(ran(records)) == 5, what="the other call's three runs")
    finally:
        stop(manager)
    attempts: dict[str, list[int]] = {}
    for row in ran(records):
        attempts.setdefault(row["job_id"], []).append(row["attempt"])
    assert attempts == {succeeds.id: [1, 2, 3], fails.id: [1, 2]}
    [failed] = broker.failed_jobs()
    assert (failed.job.id, failed.job.attempts) == (fails.id, 2)
    assert failed.failure.exc_type == "builtins.ValueError"


def test_plain_tasks_time_out_per_task_and_per_call(broker: MemoryBroker, records: Path) -> None:
    # The plain router runs one job at a time per worker: its manager kills the worker
    # at the job's time limit and fails the job as timed out.
    over = tasks.plain_sleepy.enqueue(30)  # the task's 0.5 s limit
    within = tasks.plain_sleepy.options(timeout=30).enqueue(1.0)  # this call's longer limit
    manager = run_manager(broker, "qwtest_targets.tasks:plain", num_workers=1)
    try:
        wait_for(lambda: any(row["job_id"] == within.id for row in ran(records)), what="the longer call")
        wait_for(broker.failed_jobs, what="the call past its limit to fail")
    finally:
        stop(manager)
    [failed] = broker.failed_jobs()
    assert (failed.job.id, failed.failure.kind) == (over.id, "timeout")
    assert [row["job_id"] for row in ran(records)] == [within.id]


def test_a_plain_task_of_an_async_router_times_out_per_call(broker: MemoryBroker, records: Path) -> None:
    # On an event loop the worker itself settles the job as timed out at its limit; the
    # thread running the plain task is left to end by itself, and the worker goes on.
    over = tasks.sleepy.options(timeout=0.3).enqueue(3)
    after = tasks.add.enqueue(1)
    manager = run_manager(broker, "qwtest_targets.tasks:router", num_workers=1)
    try:
        wait_for(broker.failed_jobs, what="the call past its limit to fail")
        wait_for(lambda: any(row["job_id"] == after.id for row in ran(records)), what="the next call")
    finally:
        stop(manager)
    [failed] = broker.failed_jobs()
    assert (failed.job.id, failed.failure.kind) == (over.id, "timeout")
    assert "0.3s limit" in failed.failure.message


def test_an_unknown_task_lands_in_the_failed_registry(broker: MemoryBroker, records: Path) -> None:
    unknown = broker.queue_job(Job.new({"task": "qwtest_targets.tasks:sleepyy", "args": [1]}))
    known = tasks.add.enqueue(1, 2)
    manager = run_manager(broker, "qwtest_targets.tasks:router", num_workers=1)
    try:
        wait_for(broker.failed_jobs, what="the unknown task to fail")
        wait_for(lambda: ran(records), what="the known task to run")
    finally:
        stop(manager)
    [failed] = broker.failed_jobs()
    assert (failed.job.id, failed.failure.exc_type) == (unknown, "qw_core.errors.UnknownTask")
    assert failed.failure.message.startswith(
        "no task named 'qwtest_targets.tasks:sleepyy' on this worker's router; "
        "did you mean 'qwtest_targets.tasks:sleepy'? It has 5: nap, qwtest_targets.tasks:add, "
    )
    assert [row["job_id"] for row in ran(records)] == [known.id]


def test_a_task_goes_to_its_own_queue_or_the_one_of_its_call(broker: MemoryBroker, records: Path) -> None:
    # A manager serving only "emails" runs the calls queued there: the task's own queue,
    # and a call of another task sent there; a call on the shared queue waits.
    by_task = tasks.mail.enqueue("ada@example.com")
    by_call = tasks.add.options(queue="emails").enqueue(1)
    shared = tasks.add.enqueue(2)
    back_to_shared = tasks.mail.options(queue="default").enqueue("bob@example.com")
    assert (by_task.queue, by_call.queue, shared.queue, back_to_shared.queue) == (
        "emails",
        "emails",
        None,
        None,
    )
    manager = run_manager(broker, "qwtest_targets.tasks:router", num_workers=1, queues=["emails"])
    try:
        wait_for(lambda: len(ran(records)) >= 2, what="the two calls on the emails queue")
        wait_for(lambda: not broker.queued_job_ids(queue="emails"), what="the emails queue to drain")
    finally:
        stop(manager)
    assert {row["job_id"]: row["queue"] for row in ran(records)} == {
        by_task.id: "emails",
        by_call.id: "emails",
    }
    assert broker.queued_job_ids() == [shared.id, back_to_shared.id], "the shared queue's calls still wait"
