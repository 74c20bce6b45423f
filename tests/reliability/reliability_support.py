"""Helpers shared by the reliability tests: the "exactly one place" invariant, polling,
records, and managers run in-process or as a separate process group.

Timings are test-sized (heartbeat 0.2 s, TTL 1 s); waits poll against a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
from qwtest_wait import wait_for  # noqa: F401  (the tests here import it from this module)

from qw_core.manager import Manager
from qw_core.models import Job
from qw_core.plugins import PluginConfig
from qw_redis import RedisBroker
from qwtest_targets import read_records

#: Test-sized liveness settings for managers.
FAST = {"heartbeat": 0.2, "heartbeat_ttl": 1.0, "reap_interval": 0.2, "block_timeout": 0.2}
#: The same as ``qw run`` flags.
FAST_FLAGS = ["--heartbeat", "0.2s", "--heartbeat-ttl", "1s"]
#: The manager records the workers it saw die or reaped (``died``, ``reaped`` records).
RECORDING = PluginConfig(modules=("qwtest_targets.faults",), entry_points=False)
TARGET = "qwtest_targets.faults:work"


# -- where every job is --------------------------------------------------------------------


def job_places(client: redis.Redis, job_ids: Iterable[str]) -> dict[str, list[str]]:
    """For each id, every place it is in: a list key (``all:jobs``, ``<m>:jobs``,
    ``<w>:jobs``), ``failed`` or ``delayed``. An empty list means it is in none."""
    places: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    for key in sorted(client.scan_iter(match="*:jobs", count=1000)):
        if client.type(key) != "list":
            continue
        for job_id in client.lrange(key, 0, -1):
            if job_id in places:
                places[job_id].append(key)
    delayed = sorted(client.scan_iter(match="qw:delayed:*", count=1000))
    for zset, place in [("qw:failed", "failed"), *((key, "delayed") for key in delayed)]:
        for job_id in client.zrange(zset, 0, -1):
            if job_id in places:
                places[job_id].append(place)
    return places


def assert_each_job_in_one_place(client: redis.Redis, job_ids: Iterable[str]) -> dict[str, str]:
    """Every job is in exactly one place: a queue, a worker's list, the failed registry,
    delayed, or finished (nothing of it left). Returns id → that place (``finished``).

    Also checks that the data is where the place says: a queued or held job has its
    ``job:<id>`` hash; a failed one has its registry entry and no hash; a finished one
    has neither, and no origin entry or crash count left behind.
    """
    places = job_places(client, job_ids)
    ids = list(places)
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.exists(f"job:{job_id}")
        pipe.exists(f"qw:failed:{job_id}")
        pipe.hexists("qw:origin", job_id)
        pipe.hexists("qw:recoveries", job_id)
    flags = pipe.execute()
    where: dict[str, str] = {}
    problems: list[str] = []
    for index, job_id in enumerate(ids):
        has_hash, has_entry, has_origin, has_count = flags[4 * index : 4 * index + 4]
        found = places[job_id]
        if len(found) > 1:
            problems.append(f"{job_id} is in {len(found)} places: {found}")
        elif not found:
            where[job_id] = "finished"
            leftovers = [
                what
                for what, present in (
                    ("its hash", has_hash),
                    ("a failed entry", has_entry),
                    ("an origin entry", has_origin),
                    ("a crash count", has_count),
                )
                if present
            ]
            if leftovers:
                problems.append(f"{job_id} is in no place but has {', '.join(leftovers)} (lost)")
        elif found[0] == "failed":
            where[job_id] = "failed"
            if has_hash or not has_entry:
                problems.append(f"failed job {job_id}: hash {has_hash}, failed entry {has_entry}")
        else:
            where[job_id] = found[0]
            if not has_hash:
                problems.append(f"{job_id} is on {found[0]} without its data")
    assert not problems, "\n".join(problems[:20])
    return where


# -- records written by the targets and the manager plugin ---------------------------------


def runs(directory: Path, kind: str = "ran") -> Counter[str]:
    """How many ``kind`` records each job id has."""
    return Counter(row["job_id"] for row in read_records(directory, kind) if "job_id" in row)


def records(directory: Path, kind: str) -> list[dict[str, Any]]:
    return read_records(directory, kind)


def pid_of_began(directory: Path, job_id: str, *, other_than: int | None = None) -> int | None:
    """The pid of a worker that began ``job_id`` (other than ``other_than``), if any."""
    for row in read_records(directory, "began"):
        if row["job_id"] == job_id and row["pid"] != other_than:
            return int(row["pid"])
    return None


# -- managers --------------------------------------------------------------------------------


def start_manager(url: str, name: str, **kwargs: Any) -> Manager:
    """An in-process manager (workers forked) on ``url`` with test-sized timings, started."""
    target = kwargs.pop("target", TARGET)
    options = {**FAST, "num_workers": 2, "plugins": RECORDING, **kwargs}
    manager = Manager(target, RedisBroker.from_url(url), name=name, **options)
    manager.start()
    return manager


def stop_manager(manager: Manager, timeout: float = 20.0) -> None:
    manager.stop()
    assert manager.join(timeout), "the manager did not stop"


def worker_pids(manager: Manager) -> list[int]:
    """The pids of the manager's running worker processes."""
    return sorted(s.process.pid for s in manager._slots if s.process is not None and s.process.pid)


class ManagerProcess:
    """``qw run`` in a process group of its own (so a test can kill the whole group)."""

    def __init__(self, url: str, name: str, *flags: str, record_dir: Path, workers: int = 2) -> None:
        command = [sys.executable, "-m", "qw_cli", "run", "--url", url, "-n", name, "-w", str(workers)]
        command += [*FAST_FLAGS, "-p", "qwtest_targets.faults", *flags, TARGET]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
        env.update(QWTEST_RECORD_DIR=str(record_dir), PYTHONUNBUFFERED="1")
        self._log = (record_dir / f"manager-{name}.log").open("w+b")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (as a terminal's Ctrl-C does)."""
        os.killpg(self.process.pid, signum)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()


def queue(url: str, jobs: list[Job]) -> list[str]:
    """Queue ``jobs`` on the Redis at ``url`` with a broker of its own; return their ids."""
    broker = RedisBroker.from_url(url)
    try:
        broker.queue_jobs(jobs)
    finally:
        broker.close()
    return [job.id for job in jobs]
