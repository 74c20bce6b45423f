"""The manager with real worker processes on the memory backend."""

from __future__ import annotations

import json
import logging
import os
import re
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
from qwtest_wait import wait_for

from qw_core.errors import BrokerUnavailable, ConfigurationError, TargetModuleNotFound
from qw_core.manager import MAX_WORKERS, Manager
from qw_core.memory import MemoryBroker
from qw_core.models import Job
from qw_core.plugins import PluginConfig
from qwtest_targets import read_records

pytestmark = pytest.mark.slow

RECORDING = PluginConfig(modules=("qwtest_targets.plugin",), entry_points=False)


@pytest.fixture
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QWTEST_RECORD_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


def make_manager(broker: MemoryBroker, target: str = "qwtest_targets:record", **kwargs: Any) -> Manager:
    kwargs.setdefault("num_workers", 2)
    kwargs.setdefault("plugins", RECORDING)
    return Manager(target, broker, name="test", block_timeout=0.2, **kwargs)


def test_two_workers_process_1000_jobs_exactly_once_with_hooks_in_order(
    broker: MemoryBroker, records: Path
) -> None:
    jobs = [Job.new({"n": n}) for n in range(1000)]
    broker.queue_jobs(jobs)
    manager = make_manager(broker)
    manager.start()
    try:
        wait_for(lambda: len(read_records(records, "ran")) >= 1000, what="1000 jobs to run")
        wait_for(lambda: not broker.queued_job_ids(), what="the queue to drain")
    finally:
        manager.stop()
        assert manager.join(timeout=20)

    ran = Counter(row["job_id"] for row in read_records(records, "ran"))
    assert ran == Counter({job.id: 1 for job in jobs})
    assert len({row["pid"] for row in read_records(records, "ran")}) == 2, "both workers took jobs"
    by_job: dict[str, list[str]] = {}
    for row in read_records(records, "hook"):
        by_job.setdefault(row["job_id"], []).append(row["hook"])
    assert all(hooks == ["started", "succeeded", "finished"] for hooks in by_job.values())
    assert len(by_job) == 1000
    assert all(broker.get_job(job.id) is None for job in jobs), "finished jobs leave nothing behind"
    assert broker.managers() == []
    assert broker.workers("test") == []


def test_manager_registers_itself_and_its_workers(broker: MemoryBroker) -> None:
    manager = make_manager(broker)
    manager.start()
    try:
        assert broker.managers() == ["test"]
        workers = wait_for(lambda: len(broker.workers("test")) == 2 and broker.workers("test"))
        assert all(name.startswith("test.") for name in workers)
    finally:
        manager.stop()
        assert manager.join(timeout=20)
    assert broker.managers() == []


def test_a_killed_worker_is_replaced_and_its_job_recovered(broker: MemoryBroker, records: Path) -> None:
    slow = Job.new({"sleep": 30})
    broker.queue_job(slow)
    manager = make_manager(broker, num_workers=1, restart_backoff=(0.05, 1.0))
    manager.start()
    try:
        began = wait_for(lambda: read_records(records, "began"), what="the job to start")
        victim = began[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        replacement = wait_for(
            lambda: [w for w in broker.workers("test") if w != f"test.{victim}"],
            what="a replacement worker",
        )
        assert replacement[0] != f"test.{victim}"
        # the job the dead worker held went back on the queue and was taken again
        wait_for(lambda: len(read_records(records, "began")) == 2, what="the recovered job to start again")
        assert {row["job_id"] for row in read_records(records, "began")} == {slow.id}
    finally:
        manager.stop(cold=True)
        assert manager.join(timeout=20)
    assert broker.queued_job_ids() == [slow.id], "a cold stop puts the running job back"


def start_manager_process(jobs: str, grace: float | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """A manager with one recording worker in a child process, with ``jobs`` (JSON) queued."""
    args = [sys.executable, "-m", "qwtest_targets.run_manager", "qwtest_targets:record", "1", jobs]
    if grace is not None:
        args.append(str(grace))
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(args, **popen)


def test_sigterm_mid_job_lets_the_job_finish_then_exits_0(records: Path) -> None:
    proc = start_manager_process('[{"sleep": 1.0}]')
    try:
        began = wait_for(lambda: read_records(records, "began"), what="the job to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    ran = read_records(records, "ran")
    assert [row["job_id"] for row in ran] == [began[0]["job_id"]], "the job in flight finished"


def test_ctrl_c_to_the_process_group_does_not_abort_the_running_job(records: Path) -> None:
    proc = start_manager_process('[{"sleep": 1.0}]', start_new_session=True)
    try:
        wait_for(lambda: read_records(records, "began"), what="the job to start")
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    assert len(read_records(records, "ran")) == 1


def test_second_sigint_stops_cold_and_puts_the_job_back(records: Path, tmp_path: Path) -> None:
    log = tmp_path / "manager.log"
    with log.open("wb") as stderr:
        proc = start_manager_process('[{"sleep": 30}]', stdout=subprocess.PIPE, stderr=stderr)
    try:
        [began] = wait_for(lambda: read_records(records, "began"), what="the job to start")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: b"stopping after running jobs" in log.read_bytes(), what="the first SIGINT")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert read_records(records, "ran") == [], "the job was cut off, not finished"
    assert json.loads(out) == {"queued": [began["job_id"]], "held": [], "failed": 0}, "put back"


def test_grace_period_kills_overrunning_jobs(records: Path) -> None:
    proc = start_manager_process('[{"sleep": 30}]', grace=0.5)
    try:
        wait_for(lambda: read_records(records, "began"), what="the job to start")
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - start < 10
    finally:
        proc.kill()


SCRIPT = """
import logging, sys
from qw_core import Job
from qw_core.manager import Manager
from qw_core.memory import MemoryBroker

if sys.argv[1] == "configured":
    logging.basicConfig(level=logging.WARNING, format="app: %(message)s")
broker = MemoryBroker()
broker.queue_job(Job.new({"n": 1}))
sys.exit(Manager("qwtest_targets:record", broker, num_workers=1, name="script").run())
"""


@pytest.mark.parametrize("logging_set_up", [False, True])
def test_run_from_a_script_logs_as_qw_run_does_unless_the_app_set_up_logging(
    records: Path, tmp_path: Path, logging_set_up: bool
) -> None:
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        argv = [sys.executable, "-c", SCRIPT, "configured" if logging_set_up else "bare"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for(lambda: read_records(records, "ran"), what="the job to run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    text = log.read_text(encoding="utf-8")
    if logging_set_up:
        assert "INFO" not in text, "the application's own set-up (WARNING and up) is kept"
    else:
        assert " INFO manager script started with 1 worker on memory" in text, text
        assert re.search(r" INFO job \S+ succeeded on script\.\d+", text), text


def test_an_outage_after_the_first_heartbeat_is_waited_out_not_an_exit(
    broker: MemoryBroker, records: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The server starts refusing work (out of memory, busy with a script) between the
    # manager's first heartbeat and its registration: it waits, then serves.
    register = broker.register_manager
    refusals = iter([BrokerUnavailable("out of memory"), BrokerUnavailable("busy running a script")])

    def refusing(name: str) -> None:
        refusal = next(refusals, None)
        if refusal is not None:
            raise refusal
        register(name)

    monkeypatch.setattr(broker, "register_manager", refusing)
    jobs = [Job.new({"n": n}) for n in range(5)]
    broker.queue_jobs(jobs)
    manager = make_manager(broker)
    with caplog.at_level(logging.INFO, logger="qw.manager"):
        manager.start()
    try:
        wait_for(lambda: len(read_records(records, "ran")) >= 5, what="the jobs to run")
        assert broker.managers() == ["test"]
    finally:
        manager.stop()
        assert manager.join(timeout=20)
    assert "manager test: registering failed, retrying: out of memory" in caplog.text
    assert "manager test: registered after 2 failed attempt(s)" in caplog.text
    assert sorted(row["job_id"] for row in read_records(records, "ran")) == sorted(job.id for job in jobs)


def test_a_stop_asked_for_during_an_outage_at_start_leaves_no_worker_behind(
    broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = threading.Event()

    def refusing(name: str) -> None:
        refused.set()
        raise BrokerUnavailable("out of memory")

    monkeypatch.setattr(broker, "register_manager", refusing)
    manager = make_manager(broker)
    stopper = threading.Thread(target=lambda: refused.wait(10) and manager.stop())
    stopper.start()
    with pytest.raises(BrokerUnavailable, match="out of memory"):
        manager.start()
    stopper.join()
    assert refused.is_set()
    assert all(slot.process is None or not slot.process.is_alive() for slot in manager._slots)


def test_an_unimportable_target_fails_before_any_worker_starts(broker: MemoryBroker) -> None:
    with pytest.raises(TargetModuleNotFound):
        Manager("no_such_module_qw:f", broker)


@pytest.mark.parametrize("count", [0, -1, True, 2.5])
def test_worker_count_must_be_a_positive_integer(broker: MemoryBroker, count: Any) -> None:
    with pytest.raises(ConfigurationError, match="positive integer"):
        Manager("qwtest_targets:noop", broker, num_workers=count)


def test_a_worker_count_over_the_limit_is_refused_before_any_worker_starts(broker: MemoryBroker) -> None:
    """``qw run -w 100000`` (a slip for ``-w 10``) forked until the host ran out of memory."""
    with pytest.raises(ConfigurationError, match=f"at most {MAX_WORKERS}, not {MAX_WORKERS + 1}"):
        Manager("qwtest_targets:noop", broker, num_workers=MAX_WORKERS + 1)
    assert Manager("qwtest_targets:noop", broker, num_workers=MAX_WORKERS).num_workers == MAX_WORKERS


def test_spawn_start_method_loads_a_string_target_in_each_worker(broker: MemoryBroker, records: Path) -> None:
    jobs = [Job.new({"n": n}) for n in range(10)]
    broker.queue_jobs(jobs)
    manager = make_manager(broker, start_method="spawn")
    manager.start()
    try:
        wait_for(lambda: len(read_records(records, "ran")) >= 10, what="10 jobs to run")
    finally:
        manager.stop()
        assert manager.join(timeout=30)
    assert sorted(row["job_id"] for row in read_records(records, "ran")) == sorted(j.id for j in jobs)


def test_a_broken_failure_plugin_cannot_stop_the_manager_on_a_timeout(
    broker: MemoryBroker, records: Path
) -> None:
    # The manager settles a timed-out job through qw_job_failed; the plugin raises, so
    # the job is failed (kept) and the manager goes on with the next job.
    modules = ("qwtest_targets.plugin", "qwtest_targets.broken_failed")
    plugins = PluginConfig(modules=modules, entry_points=False)
    overrun, after = Job.new({"sleep": 30}, meta={"timeout": 0.2}), Job.new({"n": 1})
    broker.queue_jobs([overrun, after])
    manager = make_manager(broker, num_workers=1, plugins=plugins, restart_backoff=(0.05, 1.0))
    manager.start()
    try:
        wait_for(lambda: after.id in {row["job_id"] for row in read_records(records, "ran")}, what="next")
        [failed] = broker.failed_jobs()
    finally:
        manager.stop()
        assert manager.join(timeout=20)
    assert (failed.job.id, failed.failure.kind) == (overrun.id, "timeout")
    assert manager.error is None


def test_a_stop_signal_that_reaches_a_worker_before_its_own_handlers_is_not_lost(
    broker: MemoryBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker forked from its manager has the manager's signal handlers until its own
    first line puts its own in place. A SIGTERM that came in between (the manager stopping
    right after it started or replaced a worker) was taken by the manager's handler in the
    child and lost: the worker ran on and its manager waited for it for ever. The window is
    held open here: each child reports its pid, then waits for the test's go."""
    import qw_core.manager as manager_module

    real_worker_main = manager_module.worker_main
    go = tmp_path / "go"

    def slow_start(*args: Any) -> None:
        (tmp_path / f"forked-{os.getpid()}").touch()
        while not go.exists():  # before worker_main: only what the fork left in place stands
            time.sleep(0.01)
        real_worker_main(*args)

    monkeypatch.setattr(manager_module, "worker_main", slow_start)
    manager = make_manager(broker, num_workers=1)
    with manager.stopping_on_signals():  # the handlers a worker inherits, as under qw run
        manager.start()
        try:
            forked = wait_for(lambda: list(tmp_path.glob("forked-*")), what="the worker to fork")
            pid = int(forked[0].name.removeprefix("forked-"))
            os.kill(pid, signal.SIGTERM)
            go.touch()
            wait_for(lambda: not _alive(pid), what=f"worker {pid} to stop on its early SIGTERM")
        finally:
            go.touch()
            manager.stop(cold=True)
            manager.join(timeout=20)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited and not yet reaped by its manager, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
