"""The plugin's own tests, as a plugin author would write them: a real plugin manager, a
real worker, the in-memory broker that qw ships for tests, and pytest's ``caplog``."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
import qw_slowjobs

from qw_core import Job, PluginConfig, make_plugin_manager
from qw_core.testing import MemoryBroker
from qw_core.worker import Worker


def run_jobs(data: list[Any], **options: Any) -> None:
    """Run one job per item of ``data`` through a real worker with the plugin loaded."""
    pm = make_plugin_manager(PluginConfig(entry_points=False, options=options), extra=[qw_slowjobs])
    broker = MemoryBroker()
    broker.queue_jobs([Job.new(item) for item in data])
    done = threading.Event()
    count = 0

    def target(job_id: str, job_data: Any) -> None:
        nonlocal count
        time.sleep(job_data["sleep"])
        count += 1
        if count == len(data):
            done.set()

    worker = Worker(broker, target, manager="test", hook=pm.hook, block_timeout=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert done.wait(10)
    finally:
        worker.request_stop()
        thread.join(10)


def test_a_slow_job_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qw.slowjobs"):
        run_jobs([{"sleep": 0.0}, {"sleep": 0.2}], **{"slowjobs.seconds": 0.1})
    slow = [r.getMessage() for r in caplog.records if r.name == "qw.slowjobs"]
    assert len(slow) == 1
    assert slow[0].startswith("slow job ")
    assert "threshold 0.100 s" in slow[0]


def test_an_async_job_is_timed_over_its_awaited_run(caplog: pytest.LogCaptureFixture) -> None:
    pm = make_plugin_manager(
        PluginConfig(entry_points=False, options={"slowjobs.seconds": 0.1}), extra=[qw_slowjobs]
    )
    broker = MemoryBroker()
    broker.queue_jobs([Job.new({"sleep": 0.0}), Job.new({"sleep": 0.2})])

    async def target(job_id: str, job_data: Any) -> None:
        await asyncio.sleep(job_data["sleep"])

    with caplog.at_level(logging.WARNING, logger="qw.slowjobs"):
        Worker(broker, target, manager="test", hook=pm.hook, burst=True).run()
    slow = [r.getMessage() for r in caplog.records if r.name == "qw.slowjobs"]
    assert len(slow) == 1, "the quick one is not slow; the slow one is, once it was awaited"
    assert float(slow[0].split(": ")[1].split(" s ")[0]) >= 0.2


def test_fast_jobs_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qw.slowjobs"):
        run_jobs([{"sleep": 0.0}] * 3)
    assert not [r for r in caplog.records if r.name == "qw.slowjobs"]


def test_a_bad_setting_falls_back_to_the_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qw.slowjobs"):
        make_plugin_manager(
            PluginConfig(entry_points=False, options={"slowjobs.seconds": "soon"}), extra=[qw_slowjobs]
        )
    assert qw_slowjobs._threshold == qw_slowjobs.DEFAULT_SECONDS
    assert "not a number of seconds" in caplog.text
