"""Which event loop an ``async def`` target's jobs run on (qw_core.eventloops): uvloop when
it is installed unless asked otherwise, refused at once when asked for and missing, in the
worker, the manager and ``qw run``; and, in real worker processes on a real Redis, the
loop each choice gives."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from qwtest_redis import PrivateRedis
from qwtest_wait import wait_for

from qw_core import Job, PluginConfig, make_plugin_manager
from qw_core.errors import ConfigurationError
from qw_core.eventloops import EVENT_LOOPS, check_event_loop, event_loop_in_use, loop_factory
from qw_core.manager import Manager
from qw_core.memory import MemoryBroker
from qw_core.process import SWITCH_INTERVAL
from qw_core.worker import Worker
from qw_redis import RedisBroker


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if uvloop were not installed: importing it fails."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


async def loop_module(job_id: str, job_data: Any) -> str:
    return type(asyncio.get_running_loop()).__module__


def run_on(broker: MemoryBroker, event_loop: str) -> set[str]:
    """Run two jobs of ``loop_module`` with ``event_loop``; the loop modules they saw."""
    seen: set[str] = set()

    async def target(job_id: str, job_data: Any) -> None:
        seen.add(await loop_module(job_id, job_data))

    broker.queue_jobs([Job.new({}), Job.new({})])
    pm = make_plugin_manager(PluginConfig(entry_points=False))
    Worker(broker, target, manager="m", name="m.1", hook=pm.hook, burst=True, event_loop=event_loop).run()
    assert broker.queued_count() == 0
    return seen


def test_auto_runs_async_jobs_on_uvloop_when_it_is_installed(broker: MemoryBroker) -> None:
    assert run_on(broker, "auto") == {"uvloop"}
    assert event_loop_in_use("auto") == "uvloop"


def test_asyncio_runs_them_on_the_standard_loop_even_with_uvloop_installed(broker: MemoryBroker) -> None:
    assert run_on(broker, "asyncio") == {"asyncio.unix_events"}
    assert event_loop_in_use("asyncio") == "asyncio"


def test_uvloop_runs_them_on_uvloop(broker: MemoryBroker) -> None:
    assert run_on(broker, "uvloop") == {"uvloop"}
    assert loop_factory("uvloop") is uvloop.new_event_loop


@pytest.mark.usefixtures("without_uvloop")
def test_without_uvloop_auto_falls_back_to_the_standard_loop(broker: MemoryBroker) -> None:
    assert run_on(broker, "auto") == {"asyncio.unix_events"}
    assert event_loop_in_use("auto") == "asyncio"


@pytest.mark.usefixtures("without_uvloop")
def test_asking_for_uvloop_without_it_is_refused_before_anything_runs(broker: MemoryBroker) -> None:
    job = broker.queue_job(Job.new({}))
    with pytest.raises(ConfigurationError, match=r"uvloop is not installed: pip install 'qw-core\[uvloop\]'"):
        Worker(broker, loop_module, manager="m", event_loop="uvloop")
    with pytest.raises(ConfigurationError, match="uvloop is not installed"):
        Manager(loop_module, broker, num_workers=1, event_loop="uvloop")
    assert broker.queued_job_ids() == [job]


def test_an_unknown_event_loop_is_refused(broker: MemoryBroker) -> None:
    with pytest.raises(
        ConfigurationError, match="unknown event loop 'trio': choose one of auto, asyncio, uvloop"
    ):
        check_event_loop("trio")
    with pytest.raises(ConfigurationError, match="unknown event loop"):
        Worker(broker, loop_module, manager="m", event_loop="trio")
    assert EVENT_LOOPS == ("auto", "asyncio", "uvloop")


def test_a_plain_target_ignores_the_choice_but_a_bad_name_is_still_refused(broker: MemoryBroker) -> None:
    ran: list[str] = []
    broker.queue_job(Job.new({}))
    pm = make_plugin_manager(PluginConfig(entry_points=False))
    Worker(
        broker, lambda i, d: ran.append(i), manager="m", hook=pm.hook, burst=True, event_loop="asyncio"
    ).run()
    assert len(ran) == 1
    with pytest.raises(ConfigurationError):
        Worker(broker, lambda i, d: None, manager="m", event_loop="gevent")


# -- in real worker processes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with PrivateRedis() as private:
        yield private.url()


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "expected"), [((), "uvloop"), (("--event-loop", "asyncio"), "asyncio.unix_events")]
)
def test_qw_run_workers_run_async_jobs_on_the_loop_chosen(
    redis_url: str, tmp_path: Path, flags: tuple[str, ...], expected: str
) -> None:
    broker = RedisBroker.from_url(redis_url)
    ids = broker.queue_jobs([Job.new({}) for _ in range(3)])
    command = [sys.executable, "-m", "qw_cli", "run", "--url", redis_url, "-n", "loops", "-w", "2", *flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
    env.update(QWTEST_RECORD_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    log = (tmp_path / "manager.log").open("w+b")
    process = subprocess.Popen(
        [*command, "qwtest_targets.concurrency:which_loop"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:

        def loops() -> list[str]:
            lines = [p.read_text().splitlines() for p in tmp_path.glob("loop.*.jsonl")]
            return [line for chunk in lines for line in chunk]

        wait_for(lambda: len(loops()) == len(ids), timeout=30, what="the three jobs to run")
        assert {json.loads(line)["module"] for line in loops()} == {expected}
        assert {json.loads(line)["job_id"] for line in loops()} == set(ids)
        # and a worker process hands work between its threads at qw's GIL switch interval
        assert {json.loads(line)["switch_interval"] for line in loops()} == {SWITCH_INTERVAL}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
        broker.close()
    word = "uvloop" if expected == "uvloop" else "asyncio"
    assert f"on the {word} event loop" in (tmp_path / "manager.log").read_text()


@pytest.mark.redis
@pytest.mark.slow
def test_a_worker_running_one_plain_job_at_a_time_keeps_pythons_switch_interval(
    redis_url: str, tmp_path: Path
) -> None:
    broker = RedisBroker.from_url(redis_url)
    [job_id] = broker.queue_jobs([Job.new({})])
    command = [sys.executable, "-m", "qw_cli", "run", "--url", redis_url, "-n", "plain", "-w", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
    env.update(QWTEST_RECORD_DIR=str(tmp_path))
    process = subprocess.Popen([*command, "qwtest_targets.concurrency:which_interval"], env=env)
    try:
        found = wait_for(lambda: list(tmp_path.glob("interval.*.jsonl")), timeout=30, what="the job to run")
        [record] = [json.loads(line) for line in found[0].read_text().splitlines()]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        broker.close()
    assert record["job_id"] == job_id
    assert record["switch_interval"] == sys.getswitchinterval() != SWITCH_INTERVAL
