"""Periodic jobs on a private real redis-server with real ``qw run`` processes: three
managers enqueue each tick of a per-second schedule once; a manager killed -9 in the
middle of a tick (its script ran, its reply never came) leaves nothing twice and the
others go on at once; managers whose hosts' clocks are minutes off enqueue on the
backend's time; a reply lost on the way is retried without a second job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from qwtest_proxy import ReplyLosingProxy
from qwtest_redis import PrivateRedis
from qwtest_wait import wait_for

from qw_core.schedules import Schedule, tick_job_id
from qw_redis import RedisBroker
from qw_redis.connection import RedisOptions
from qw_redis.scripts import script_source
from qwtest_targets import read_records

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SCHEDULE_ID = "every-second"


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    with PrivateRedis() as private:
        yield private


@pytest.fixture
def schedules_file(tmp_path: Path) -> Path:
    """A per-second schedule that catches up on every missed tick (so none may be missing)."""
    path = tmp_path / "schedules.json"
    entry = {"id": SCHEDULE_ID, "cron": "* * * * * *", "missed": "all", "catch_up": 60, "data": {"n": 1}}
    path.write_text(json.dumps([entry]), encoding="utf-8")
    return path


class Managers:
    """``qw run`` processes, each in a process group of its own, recording into one folder."""

    def __init__(self, records: Path) -> None:
        self.records = records
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, url: str, schedules: Path, *flags: str, **env: str) -> None:
        command = [sys.executable, "-m", "qw_cli", "run", "--url", url, "-n", name, "-w", "1"]
        command += ["--heartbeat", "0.2s", "--heartbeat-ttl", "1s", "--schedules", str(schedules), *flags]
        command += ["qwtest_targets.periodic:record_tick"]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
        environ.update(QWTEST_RECORD_DIR=str(self.records), PYTHONUNBUFFERED="1", **env)
        log = (self.records / f"manager-{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            command, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in self.processes.items():
            assert process.wait(timeout=30) in (0, -signal.SIGKILL), self.log(name)

    def log(self, name: str) -> str:
        return (self.records / f"manager-{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def managers(tmp_path: Path) -> Iterator[Managers]:
    records = tmp_path / "records"
    records.mkdir()
    found = Managers(records)
    yield found
    found.close()


def ticks_run(records: Path) -> Counter[float]:
    """How many runs each tick's job had."""
    rows = read_records(records, "tick")
    for row in rows:
        assert row["job_id"] == tick_job_id(SCHEDULE_ID, row["tick"]), row
    return Counter(float(row["tick"]) for row in rows)


def assert_each_tick_once(runs: Counter[float], *, at_least: int) -> None:
    """Every tick from the first run to the last ran exactly once, and there are enough."""
    ticks = sorted(runs)
    assert len(ticks) >= at_least, ticks
    assert ticks == [float(t) for t in range(int(ticks[0]), int(ticks[-1]) + 1)], "a tick is missing"
    twice = {tick: n for tick, n in runs.items() if n != 1}
    assert not twice, f"ticks run more than once: {twice}"


def wait_for_ticks(records: Path, count: int, timeout: float = 40.0) -> Counter[float]:
    return wait_for(
        lambda: runs if len(runs := ticks_run(records)) >= count else None, timeout, f"{count} ticks"
    )


def test_three_managers_enqueue_each_tick_of_a_per_second_schedule_once(
    server: PrivateRedis, managers: Managers, schedules_file: Path
) -> None:
    for name in ("ma", "mb", "mc"):
        managers.start(name, server.url(), schedules_file)
    wait_for_ticks(managers.records, 8)
    managers.stop_all()
    runs = ticks_run(managers.records)
    assert_each_tick_once(runs, at_least=8)
    client = redis.Redis.from_url(server.url(), decode_responses=True)
    assert client.hget(f"qw:tick:{SCHEDULE_ID}", "manager") in {"ma", "mb", "mc"}
    assert not client.exists(
        "qw:declared:ma", "qw:declared:mb", "qw:declared:mc"
    )  # withdrawn as they stopped
    assert client.smembers("qw:schedulers") == set()


def test_a_manager_killed_mid_tick_leaves_the_tick_enqueued_once(
    server: PrivateRedis, managers: Managers, schedules_file: Path
) -> None:
    client = redis.Redis.from_url(server.url(), decode_responses=True)
    sha = client.script_load(script_source("tick.lua"))  # so its first call is the script itself
    with ReplyLosingProxy(server.port) as proxy:
        managers.start("doomed", f"redis://127.0.0.1:{proxy.port}/0", schedules_file)
        proxy.lose_next(sha.encode())  # its next tick.lua: Redis runs it, the reply is held
        assert proxy.request_forwarded.wait(30), managers.log("doomed")
        managers.kill("doomed")  # in the middle of its tick: the step is done, it never knew
        proxy.cut.set()
        managers.start("mb", server.url(), schedules_file)
        managers.start("mc", server.url(), schedules_file)
        before = len(ticks_run(managers.records))
        wait_for_ticks(managers.records, before + 5)
        managers.stop_all()
    runs = ticks_run(managers.records)
    assert_each_tick_once(runs, at_least=5)


def test_managers_with_host_clocks_minutes_off_enqueue_on_the_backend_time(
    server: PrivateRedis, managers: Managers, schedules_file: Path
) -> None:
    for name, skew in (("fast", "420"), ("slow", "-420")):
        managers.start(
            name, server.url(), schedules_file, "-p", "qwtest_targets.skewed_clock", QWTEST_CLOCK_SKEW=skew
        )
    wait_for_ticks(managers.records, 5)
    managers.stop_all()
    runs = ticks_run(managers.records)
    assert_each_tick_once(runs, at_least=5)
    for row in read_records(managers.records, "tick"):
        # queued_at is the backend's time: right after its tick (not 7 minutes before)
        assert 0 <= row["queued_at"] - row["tick"] < 5, row
    real_now = time.time()
    assert all(abs(tick - real_now) < 120 for tick in runs)


def test_a_tick_whose_reply_is_lost_is_retried_without_a_second_job(server: PrivateRedis) -> None:
    client = redis.Redis.from_url(server.url(), decode_responses=True)
    sha = client.script_load(script_source("tick.lua"))
    schedule = Schedule("* * * * * *", id="s", data={"n": 1})
    with ReplyLosingProxy(server.port) as proxy:
        broker = RedisBroker.from_url(
            f"redis://127.0.0.1:{proxy.port}/0", RedisOptions(backoff_cap=0.05, socket_timeout=60.0)
        )
        proxy.lose_next(sha.encode())
        result: list[Any] = []
        sending = threading.Thread(
            target=lambda: result.append(broker.enqueue_tick("s", 100.0, schedule.job(100.0), manager="m1"))
        )
        sending.start()
        assert proxy.request_forwarded.wait(10)
        proxy.cut.set()
        sending.join(30)
        assert proxy.sent_again == 1  # redis-py sent it again, on a new connection
        broker.close()
    [retried] = result
    assert not retried.enqueued  # the first attempt did it: the retry changed nothing
    assert (retried.last.tick, retried.last.manager) == (100.0, "m1")
    assert client.lrange("all:jobs", 0, -1) == [tick_job_id("s", 100.0)]
