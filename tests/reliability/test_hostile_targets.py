"""Targets that do what a job should not: exit the process, raise KeyboardInterrupt, fork
children that outlive them or come back into the worker (issue 10, items 1 and 7).

Whatever a target does, its job ends in exactly one place, the manager keeps running and
serving the queue, and the manager notices a worker's death at once. Real redis-server (a
private one per module); test-sized timings (heartbeat 0.2 s, TTL 1 s) unless a test says.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import attrs
import pytest
import redis
from reliability_support import (
    RECORDING,
    assert_each_job_in_one_place,
    queue,
    records,
    runs,
    start_manager,
    stop_manager,
    wait_for,
    worker_pids,
)

from qw_core.manager import Manager
from qw_core.models import Job
from qw_core.plugins import PluginConfig
from qw_core.policy import RetryPolicy
from qw_redis import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: The recording plugin, and plugins with the bug QWTEST_BAD_HOOK names.
BAD_PLUGINS = ("qwtest_targets.faults", "qwtest_targets.bad_plugins")


def failed_entry(url: str, job_id: str) -> object:
    broker = RedisBroker.from_url(url)
    try:
        return broker.get_failed(job_id)
    finally:
        broker.close()


@pytest.mark.parametrize(
    ("data", "exc_type"),
    [
        ({"exit": 78}, "builtins.SystemExit"),  # 78 is also qw's own "could not start" code
        ({"exit": 0}, "builtins.SystemExit"),
        ({"interrupt": True}, "builtins.KeyboardInterrupt"),
    ],
    ids=["sys.exit(78)", "sys.exit(0)", "KeyboardInterrupt"],
)
def test_a_target_that_exits_or_interrupts_fails_its_job_and_the_manager_goes_on(
    url: str, client: redis.Redis, record_dir: Path, data: dict[str, object], exc_type: str
) -> None:
    bad = Job.new(data)
    others = [Job.new({"n": n}) for n in range(20)]
    job_ids = queue(url, [bad, *others])
    manager = start_manager(url, "ex")
    try:
        pids = worker_pids(manager)
        entry = wait_for(lambda: failed_entry(url, bad.id), what="the job to fail")
        wait_for(lambda: len(runs(record_dir)) == 20, what="the other jobs")
        assert not manager.join(0), "the manager is still running"
        assert manager.error is None
        assert worker_pids(manager) == pids, "no worker died: the job failed like any other"
        later = queue(url, [Job.new({"after": True})])
        wait_for(lambda: later[0] in runs(record_dir), what="a job queued after it")
    finally:
        stop_manager(manager)
    assert entry.failure.kind == "error"  # type: ignore[attr-defined]
    assert entry.failure.exc_type == exc_type  # type: ignore[attr-defined]
    assert records(record_dir, "died") == []
    where = assert_each_job_in_one_place(client, [*job_ids, *later])
    assert where.pop(bad.id) == "failed"
    assert set(where.values()) == {"finished"}
    assert client.smembers("all:managers") == set()


def test_a_target_that_kills_its_process_with_exit_code_78_is_a_crash_not_a_bad_start(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    # os._exit(78) cannot be caught: the worker process ends with qw's own "could not
    # start" code. The manager must go by what the worker reported (it did start), settle
    # it as a crash, restart it, and in the end fail the job as a poison job.
    bad = Job.new({"os_exit": 78})
    others = [Job.new({"n": n}) for n in range(20)]
    job_ids = queue(url, [bad, *others])
    manager = start_manager(url, "ox", max_recoveries=1)
    try:
        entry = wait_for(lambda: failed_entry(url, bad.id), what="the poison job to fail")
        wait_for(lambda: len(runs(record_dir)) == 20, what="the other jobs")
        assert not manager.join(0), "the manager is still running"
        assert manager.error is None
        wait_for(lambda: len(worker_pids(manager)) == 2, what="replacements")
    finally:
        stop_manager(manager)
    assert entry.failure.kind == "crashed"  # type: ignore[attr-defined]
    assert runs(record_dir, "began")[bad.id] == 2, "run, put back once, run, failed"
    assert [row["exitcode"] for row in records(record_dir, "died")] == [78, 78]
    where = assert_each_job_in_one_place(client, job_ids)
    assert where.pop(bad.id) == "failed"
    assert set(where.values()) == {"finished"}


def test_a_worker_that_cannot_start_stops_the_manager_after_settling_everything(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    job_ids = queue(url, [Job.new({"n": n}) for n in range(3)])
    plugins = PluginConfig(modules=("qwtest_targets.refuse_in_worker",), entry_points=False)
    manager = Manager(
        "qwtest_targets.faults:work",
        RedisBroker.from_url(url),
        name="ns",
        num_workers=2,
        plugins=plugins,
        heartbeat=0.2,
        heartbeat_ttl=1.0,
    )
    manager.start()
    assert manager.join(20), "the manager stops by itself"
    assert manager.error is not None
    assert "could not start" in manager.error
    assert client.smembers("all:managers") == set()
    assert client.keys("ns*") == []
    assert not client.hexists("qw:managers", "ns")
    where = assert_each_job_in_one_place(client, job_ids)
    assert set(where.values()) == {"all:jobs"}, "nothing was taken, nothing lost"


def test_a_forked_child_that_outlives_its_job_does_not_hide_the_workers_death(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    # The child inherits every descriptor of the worker, the pipe multiprocessing watches
    # for its exit included. With a long TTL, only the manager's own exit watch can notice
    # the death in time: the reaper would take 30 s.
    forker = Job.new({"fork_sleep": 30, "sleep": 60})
    job_ids = queue(url, [forker])
    manager = start_manager(url, "fk", num_workers=1, heartbeat=5.0, heartbeat_ttl=30.0)
    try:
        [pid] = wait_for(lambda: worker_pids(manager) if runs(record_dir, "began") else None, what="start")
        os.kill(pid, signal.SIGKILL)
        died = wait_for(lambda: records(record_dir, "died"), timeout=10, what="the manager to see the death")
        assert died[0]["worker"] == f"fk.{pid}"
        assert records(record_dir, "reaped") == []
        wait_for(lambda: runs(record_dir, "began")[forker.id] == 2, timeout=10, what="the job to run again")
    finally:
        manager.stop(cold=True)
        assert manager.join(20)
    where = assert_each_job_in_one_place(client, job_ids)
    assert where[forker.id] == "all:jobs", "put back, uncounted, by the cold stop"


def test_a_forked_child_that_returns_into_the_worker_exits_before_touching_anything(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    forker = Job.new({"fork_return": True})
    others = [Job.new({"n": n}) for n in range(30)]
    job_ids = queue(url, [forker, *others])
    manager = start_manager(url, "fr", num_workers=1, plugins=RECORDING)
    try:
        pids = worker_pids(manager)
        wait_for(lambda: len(runs(record_dir)) == 31, what="every job")
        wait_for(lambda: not client.exists("all:jobs"), what="the queue to drain")
    finally:
        stop_manager(manager)
    [forked] = records(record_dir, "forked")
    assert forked["pid"] not in pids
    finished = records(record_dir, "finished")
    assert sorted(row["job_id"] for row in finished) == sorted(job_ids), "each settled once"
    assert {row["pid"] for row in finished} == set(pids), "only by the worker itself"
    assert {row["pid"] for row in records(record_dir, "began")} == set(pids), "the child took nothing"
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"raise_surrogates": True},
            "half a pair: \\ud83d, and a byte: \\udcff",
        ),
        ({"bad_str": True}, "<_Unprintable whose str() raised>"),
    ],
    ids=["lone surrogates", "a __str__ that raises"],
)
def test_a_failure_that_is_hard_to_write_down_is_failed_like_any_other(
    url: str, client: redis.Redis, record_dir: Path, data: dict[str, object], message: str
) -> None:
    bad = Job.new(data)
    job_ids = queue(url, [bad, *(Job.new({"n": n}) for n in range(10))])
    manager = start_manager(url, "hw", num_workers=1)
    try:
        entry = wait_for(lambda: failed_entry(url, bad.id), what="the job to fail")
        wait_for(lambda: len(runs(record_dir)) == 10, what="the other jobs")
    finally:
        stop_manager(manager)
    assert entry.failure.message == message  # type: ignore[attr-defined]
    assert records(record_dir, "died") == []
    assert runs(record_dir, "began")[bad.id] == 1
    where = assert_each_job_in_one_place(client, job_ids)
    assert where.pop(bad.id) == "failed"
    assert set(where.values()) == {"finished"}


def test_a_plugin_that_answers_nonsense_fails_the_job_and_the_worker_goes_on(
    url: str, client: redis.Redis, record_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QWTEST_BAD_HOOK", "decision")
    plugins = PluginConfig(
        modules=("qwtest_targets.faults", "qwtest_targets.bad_plugins"), entry_points=False
    )
    bad = Job.new({"raise_text": "boom"})
    job_ids = queue(url, [bad, *(Job.new({"n": n}) for n in range(10))])
    manager = start_manager(url, "bp", num_workers=1, plugins=plugins)
    try:
        entry = wait_for(lambda: failed_entry(url, bad.id), what="the job to fail")
        wait_for(lambda: len(runs(record_dir)) == 10, what="the other jobs")
    finally:
        stop_manager(manager)
    assert entry.failure.message == "boom"  # type: ignore[attr-defined]
    assert records(record_dir, "died") == []
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"failed", "finished"}


def test_a_retry_asked_for_in_an_endless_time_backs_off_instead(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    job = Job.new({"retry_forever": True})
    queue(url, [job])
    plugins = attrs.evolve(RECORDING, retry=RetryPolicy(max_retries=1, backoff=0.2, jitter=0.0))
    manager = start_manager(url, "ri", num_workers=1, plugins=plugins)
    try:
        wait_for(lambda: failed_entry(url, job.id), what="the job to run twice and fail")
    finally:
        stop_manager(manager)
    assert runs(record_dir, "began")[job.id] == 2, "retried after the policy's back-off, not never"


def test_a_thread_a_target_leaves_running_does_not_keep_a_stopped_worker_alive(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    [job_id] = queue(url, [Job.new({"leave_thread": True})])
    manager = start_manager(url, "lt", num_workers=1)
    wait_for(lambda: runs(record_dir)[job_id], what="the job to run")
    stop_manager(manager, timeout=15)
    assert client.smembers("all:managers") == set()
    assert assert_each_job_in_one_place(client, [job_id]) == {job_id: "finished"}


@pytest.mark.parametrize("hook", ["worker_started", "manager_started"])
def test_a_plugin_that_raises_at_start(
    url: str, client: redis.Redis, record_dir: Path, monkeypatch: pytest.MonkeyPatch, hook: str
) -> None:
    # At a worker's start, the worker cannot start: the manager stops (a restart would fail
    # the same way). At the manager's start, the bug is logged and the manager runs.
    monkeypatch.setenv("QWTEST_BAD_HOOK", hook)
    job_ids = queue(url, [Job.new({"n": n}) for n in range(5)])
    plugins = PluginConfig(
        modules=("qwtest_targets.faults", "qwtest_targets.bad_plugins"), entry_points=False
    )
    manager = start_manager(url, "ps", num_workers=2, plugins=plugins)
    try:
        if hook == "worker_started":
            assert manager.join(20), "the manager stops by itself"
            assert manager.error is not None
            assert "could not start" in manager.error
            assert runs(record_dir) == {}
        else:
            wait_for(lambda: len(runs(record_dir)) == 5, what="the jobs")
    finally:
        stop_manager(manager)
    expected = "all:jobs" if hook == "worker_started" else "finished"
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {expected}
    assert client.keys("ps*") == []
