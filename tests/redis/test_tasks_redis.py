"""``qw run MODULE:router`` on a real Redis: task calls queued through the router's broker
factory run in the manager's worker processes, and calls that cannot run fail into the
failed registry."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from qwtest_wait import wait_for
from redis_support import redis_url

from qw_core.models import Job
from qw_redis.broker import RedisBroker
from qwtest_targets import read_records, tasks

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: This module's own database (no other test module uses 6).
REDIS_DB = 6


@pytest.fixture
def url(redis_db: int, real_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> str:
    """The database's URL; the fixture router queues there through a broker factory."""
    url = redis_url(redis_db)
    monkeypatch.setattr(tasks.router, "broker", lambda: RedisBroker.from_url(url))
    return url


@pytest.fixture
def records(tmp_path: Path) -> Path:
    directory = tmp_path / "records"
    directory.mkdir()
    return directory


@contextlib.contextmanager
def running(url: str, records: Path, folder: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """``qw run [OPTIONS] qwtest_targets.tasks:router`` with one worker; stopped with
    SIGTERM, which it must exit 0 on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
    env["QWTEST_RECORD_DIR"] = str(records)
    argv = [sys.executable, "-m", "qw_cli", "run", "--url", url, "-w", "1", "-n", "taskrun", *options]
    with open(folder / "stderr", "wb") as stderr:
        process = subprocess.Popen(
            [*argv, "qwtest_targets.tasks:router"], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    assert code == 0, (folder / "stderr").read_text()


@pytest.fixture
def qw_run(url: str, records: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with running(url, records, tmp_path) as process:
        yield process


def ran(records: Path) -> dict[str, dict[str, Any]]:
    return {row["job_id"]: row for row in read_records(records, "task")}


def test_qw_run_runs_plain_and_async_task_calls_queued_through_the_router(
    qw_run: subprocess.Popen[bytes], records: Path, real_client: redis.Redis
) -> None:
    adds = [tasks.add.enqueue(n, y=10) for n in range(10)]
    naps = [tasks.nap.enqueue(0.01, label=f"nap {n}") for n in range(10)]
    wait_for(lambda: len(ran(records)) >= 20 or qw_run.poll() is not None, what="20 task calls to run")
    rows = ran(records)
    assert {h.id for h in adds + naps} == set(rows), "each ran in its own job (current_job())"
    assert [rows[h.id]["x"] + rows[h.id]["y"] for h in adds] == [n + 10 for n in range(10)]
    assert [rows[h.id]["label"] for h in naps] == [f"nap {n}" for n in range(10)]
    assert {rows[h.id]["thread"] for h in naps} == {"qw-event-loop"}
    assert all(rows[h.id]["thread"].startswith("qw-task") for h in adds)
    # A job is finished after its target returns (with the worker's next take), so its
    # record can be written a moment before its data is gone.
    wait_for(
        lambda: not real_client.exists(*(f"job:{h.id}" for h in adds + naps)),
        what="finished jobs to leave nothing behind",
    )


def test_calls_the_router_cannot_run_land_in_the_failed_registry(
    url: str, qw_run: subprocess.Popen[bytes], records: Path
) -> None:
    producer = RedisBroker.from_url(url)
    unknown = producer.queue_job(Job.new({"task": "qwtest_targets.tasks:ad", "args": [1]}))
    shapeless = producer.queue_job(Job.new({"image": "cat.png"}))
    unfit = producer.queue_job(Job.new({"task": "nap", "kwargs": {"minutes": 1}}))
    wait_for(lambda: producer.failed_count() == 3 or qw_run.poll() is not None, what="3 jobs to fail")
    failures = {failed.job.id: failed.failure for failed in producer.failed_jobs()}
    assert failures[unknown].exc_type == "qw_core.errors.UnknownTask"
    assert "did you mean 'qwtest_targets.tasks:add'?" in failures[unknown].message
    assert failures[shapeless].exc_type == "qw_core.errors.InvalidTaskCall"
    assert "unknown keys 'image'" in failures[shapeless].message
    unfit_message = "task nap takes (seconds, label=''): missing a required argument: 'seconds'"
    assert failures[unfit].message == unfit_message
    assert ran(records) == {}
    producer.close()


def test_qw_run_queue_serves_the_task_calls_queued_there(
    url: str, records: Path, tmp_path: Path, real_client: redis.Redis
) -> None:
    by_task = tasks.mail.enqueue("ada@example.com")  # the task's queue: emails
    by_call = tasks.add.options(queue="emails").enqueue(1)
    shared = tasks.add.enqueue(2)
    with running(url, records, tmp_path, "--queue", "emails") as process:
        wait_for(lambda: len(ran(records)) >= 2 or process.poll() is not None, what="the emails calls")
    assert {job_id: row["queue"] for job_id, row in ran(records).items()} == {
        by_task.id: "emails",
        by_call.id: "emails",
    }
    assert real_client.lrange("all:jobs", 0, -1) == [shared.id], "the shared queue's call still waits"
