"""A worker whose manager is gone must stop (qw_core.worker: "It also stops if its
manager process disappears"), once it holds nothing it could still settle.

A thread settled as timed out (abandoned: its job is in the failed registry or retried)
keeps its run in ``Worker._flights``; the loop stops only when no flight is left, and only
the manager's last-resort kill ends such a thread. With the manager killed alone
(``kill -9 <manager pid>``, an OOM kill of the manager), nobody kills it: the worker
process lives on for as long as the abandoned thread runs (forever for a hung one),
holding nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from reliability_support import FAST_FLAGS, queue, records, wait_for

from qw_core.models import Job
from qw_redis import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class QwRun:
    """``qw run`` of a qwtest_targets.concurrency target in a session of its own."""

    def __init__(self, url: str, name: str, target: str, *flags: str, record_dir: Path) -> None:
        command = [sys.executable, "-m", "qw_cli", "run", "--url", url, "-n", name, "-w", "1"]
        command += [*FAST_FLAGS, "-p", "qwtest_targets.faults", *flags, target]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
        env.update(QWTEST_RECORD_DIR=str(record_dir), PYTHONUNBUFFERED="1")
        self._log = (record_dir / f"manager-{name}.log").open("w+b")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()


def test_a_worker_whose_manager_was_killed_stops_though_a_thread_it_abandoned_runs_on(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    stuck = Job.new({"sleep": 3600}, meta={"timeout": 0.3})
    queue(url, [stuck])
    run = QwRun(url, "orph", "qwtest_targets.concurrency:work", "--concurrency", "2", record_dir=record_dir)
    broker = RedisBroker.from_url(url)
    try:
        [failed] = wait_for(broker.failed_jobs, timeout=20, what="the stuck job to be settled as timed out")
        assert failed.failure.kind == "timeout"
        [began] = records(record_dir, "began")
        worker_pid = int(began["pid"])
        os.kill(run.process.pid, signal.SIGKILL)  # the manager alone
        run.process.wait(timeout=10)
        assert alive(worker_pid)
        # The worker notices within a block timeout (1 s here); it holds nothing to settle.
        wait_for(lambda: not alive(worker_pid), timeout=15, what="the orphaned worker to stop")
    finally:
        broker.close()
        run.close()
    assert client.llen(f"orph.{worker_pid}:jobs") == 0


def test_a_warm_stop_does_not_wait_for_a_thread_whose_job_was_settled_already(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    """The same root cause, on a plain SIGTERM: the job was settled as timed out long ago,
    yet the worker waits for its thread, so the warm stop lasts until the manager's
    last-resort kill (LAST_RESORT, 10 s past the deadline), which then reports the worker
    as died."""
    stuck = Job.new({"sleep": 3600}, meta={"timeout": 0.3})
    queue(url, [stuck])
    run = QwRun(url, "warm", "qwtest_targets.concurrency:work", "--concurrency", "2", record_dir=record_dir)
    broker = RedisBroker.from_url(url)
    try:
        wait_for(broker.failed_jobs, timeout=20, what="the stuck job to be settled as timed out")
        run.process.send_signal(signal.SIGTERM)
        try:
            code = run.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        broker.close()
        run.close()
    assert code == 0, "the warm stop waited for a thread whose job was settled already"
    assert records(record_dir, "died") == []
