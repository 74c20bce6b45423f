"""``qw run`` as a real process: jobs queued with ``qw enqueue`` run, SIGTERM stops it cleanly.

Also the embedded first run (no Redis), and ``qw run``'s refusals.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_support import (
    DEAD_URL,
    REDIS_DB,
    REDIS_URL,
    Process,
    assert_one_line_error,
    invoke,
    read_jsonl,
    run_script,
    script,
    wait_for,
    wait_for_records,
)
from qwtest_readme import write_block
from qwtest_redis import free_port

JOBS = 6


@pytest.mark.redis
@pytest.mark.slow
def test_run_processes_enqueued_jobs_and_stops_on_sigterm(
    redis_db: Any, record_dir: Path, tmp_path: Path
) -> None:
    name = "cli-run-test"
    argv = [*script("qw"), "run", "--backend", "redis", "--url", REDIS_URL, "-w", "2", "-n", name]
    with Process([*argv, "-p", "qwtest_targets.plugin", "qwtest_targets:record"]) as manager:
        wait_for(
            lambda: redis_db.sismember("all:managers", name) or not manager.alive(),
            what="manager to register",
        )
        assert manager.alive(), manager.stderr.text()
        assert wait_for(lambda: len(redis_db.smembers(f"{name}:workers")) == 2, what="two workers")

        path = tmp_path / "jobs.jsonl"
        path.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(JOBS)), encoding="utf-8")
        queued = run_script("qw", "enqueue", "--url", REDIS_URL, "--file", str(path))
        assert queued.returncode == 0, queued.stderr
        assert queued.stderr == f"queued {JOBS} jobs\n"
        ids = queued.stdout.split()

        ran = wait_for_records(record_dir, "ran", JOBS)
        assert sorted(r["job_id"] for r in ran) == sorted(ids)
        assert sorted(r["data"]["n"] for r in ran) == list(range(JOBS))
        assert len({r["pid"] for r in ran}) <= 2
        hooks = read_jsonl(record_dir, "hook")  # -p plugins reach the workers
        assert sorted(r["job_id"] for r in hooks if r["hook"] == "finished") == sorted(ids)

        assert manager.stop(signal.SIGTERM) == 0, manager.stderr.text()
    assert not redis_db.sismember("all:managers", name)
    assert redis_db.smembers(f"{name}:workers") == set()
    assert redis_db.keys("job:*") == []  # every job finished
    log = manager.stderr.text()
    assert f"manager {name} started with 2 workers on {REDIS_URL}" in log
    for job_id in ids:
        assert re.search(
            rf"^\S+ \S+ INFO job {job_id} succeeded on {name}\.\d+ in [\d.]+ ms$", log, re.MULTILINE
        ), log


@pytest.mark.redis
@pytest.mark.slow
def test_two_runs_on_one_host_need_no_names_and_a_name_in_use_is_refused(redis_db: Any) -> None:
    host = socket.gethostname()
    argv = [*script("qw"), "run", "--backend", "redis", "--url", REDIS_URL, "-w", "1"]

    def registered(name: str, manager: Process) -> None:
        started = f"manager {name} started with 1 worker on"
        wait_for(
            lambda: manager.stderr.matching(lambda line: started in line) or not manager.alive(),
            what=f"manager {name} to start",
        )
        assert manager.alive(), manager.stderr.text()
        assert redis_db.sismember("all:managers", name)

    with Process([*argv, "qwtest_targets:record"]) as first:
        registered(host, first)
        with Process([*argv, "qwtest_targets:record"]) as second:
            registered(f"{host}-2", second)
            refused = run_script("qw", "run", "--url", REDIS_URL, "-n", host, "qwtest_targets:record")
            assert_one_line_error(refused, f"manager name '{host}' is in use", "-n NAME")
            assert second.stop(signal.SIGTERM) == 0, second.stderr.text()
        first.kill()  # crashed: its heartbeat is still there, but its process is gone
        assert redis_db.get(f"qw:hb:{host}") is not None
    with Process([*argv, "-n", host, "qwtest_targets:record"]) as again:
        registered(host, again)
        assert again.stop(signal.SIGTERM) == 0, again.stderr.text()


@pytest.mark.slow
def test_the_readme_first_target_runs_from_the_folder_that_holds_it(tmp_path: Path) -> None:
    # As the README says: myapp/jobs.py (no __init__.py), and qw run from that folder.
    write_block(tmp_path, "myapp/jobs.py")
    argv = [*script("qw"), "run", "--embedded", "-w", "2", "myapp.jobs:handle"]
    with Process(argv, cwd=tmp_path) as manager:
        hint = wait_for(
            lambda: manager.stderr.matching(lambda line: "qw enqueue --url" in line) or not manager.alive(),
            what="the URL line",
        )
        assert manager.alive(), manager.stderr.text()
        url = re.search(r"--url (redis://127\.0\.0\.1:\d+/0)", hint[0]).group(1)  # type: ignore[union-attr]
        queued = run_script("qw", "enqueue", "--url", url, '{"image": "cat.png"}', cwd=tmp_path)
        assert queued.returncode == 0, queued.stderr
        wait_for(
            lambda: manager.stdout.matching(lambda line: line == "resizing cat.png"), what="the job to run"
        )
        assert manager.stop(signal.SIGTERM) == 0, manager.stderr.text()


@pytest.mark.redis
@pytest.mark.slow
def test_the_original_qw_manager_also_imports_from_the_current_folder(tmp_path: Path, redis_db: Any) -> None:
    write_block(tmp_path, "myapp/jobs.py")
    port = REDIS_URL.rsplit(":", 1)[1].split("/")[0]
    argv = [
        *script("qw-manager"),
        "-p",
        port,
        "-d",
        str(REDIS_DB),
        "-w",
        "1",
        "-n",
        "legacy",
        "myapp.jobs.handle",
    ]
    with Process(argv, cwd=tmp_path) as manager:
        wait_for(
            lambda: redis_db.sismember("all:managers", "legacy") or not manager.alive(),
            what="qw-manager to register",
        )
        assert manager.alive(), manager.stderr.text()
        queued = run_script(
            "qw", "enqueue", "--url", REDIS_URL, "--manager", "legacy", '{"image": "dog.png"}'
        )
        assert queued.returncode == 0, queued.stderr
        wait_for(
            lambda: manager.stdout.matching(lambda line: line == "resizing dog.png"), what="the job to run"
        )
        assert manager.stop(signal.SIGTERM) == 0, manager.stderr.text()


@pytest.mark.slow
def test_embedded_first_run(tmp_path: Path) -> None:
    with Process(
        [*script("qw"), "run", "--embedded", "--sample-jobs", "3", "-w", "2", "qw_core.examples:echo"]
    ) as manager:
        wait_for(
            lambda: len(manager.stdout.snapshot()) >= 3 or not manager.alive(), timeout=20, what="3 echoes"
        )
        lines = manager.stdout.snapshot()
        assert len(lines) == 3, manager.stderr.text()
        assert sorted(json.loads(line.split(": ", 1)[1])["sample"] for line in lines) == [1, 2, 3]

        # the printed command works against the embedded server
        hint = wait_for(
            lambda: manager.stderr.matching(lambda line: "qw enqueue --url" in line), what="the URL line"
        )
        url = re.search(r"--url (redis://127\.0\.0\.1:\d+/0)", hint[0]).group(1)  # type: ignore[union-attr]
        queued = run_script("qw", "enqueue", "--url", url, '{"hello": "world"}')
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.strip()
        wait_for(lambda: manager.stdout.matching(lambda line: job_id in line), what="the queued job to run")
        assert manager.stdout.matching(lambda line: job_id in line)[0].endswith(
            f'job {job_id}: {{"hello": "world"}}'
        )

        assert manager.stop(signal.SIGTERM) == 0, manager.stderr.text()


@pytest.mark.redis
def test_bad_target_is_one_line(redis_db: Any) -> None:
    for target, needle in [
        ("no_such_module_xyz:run", "no module named 'no_such_module_xyz'"),
        ("qwtest_targets:missing", "has no attribute 'missing'"),
        ("qwtest_targets:NOT_CALLABLE", "not callable"),
        ("qwtest_targets.broken_import:run", "broken on purpose"),
    ]:
        assert_one_line_error(invoke("run", "--url", REDIS_URL, target), "target", needle)
    assert redis_db.keys("*") == []


@pytest.mark.redis
def test_bad_settings_are_refused(redis_db: Any) -> None:
    assert_one_line_error(invoke("run", "--url", REDIS_URL, "-n", "all", "qwtest_targets:noop"), "reserved")
    assert_one_line_error(invoke("run", "--url", REDIS_URL, "-n", "", "qwtest_targets:noop"), "empty")
    assert_one_line_error(
        invoke("run", "--url", REDIS_URL, "-n", "web.4242", "qwtest_targets:noop"),
        "manager name 'web.4242' ends in '.4242'",
        "use another name, such as web-4242",
    )
    assert_one_line_error(
        invoke("run", "--url", REDIS_URL, "-n", "evil\u202etxt", "qwtest_targets:noop"), "U+202E"
    )
    assert_one_line_error(
        invoke("enqueue", "--url", REDIS_URL, "--manager", "web.4242", "--force", "{}"), "ends in '.4242'"
    )
    assert_one_line_error(invoke("move", "--url", REDIS_URL, "x", "--to", "web.4242"), "ends in '.4242'")
    assert_one_line_error(
        invoke("run", "--backend", "nope", "qwtest_targets:noop"), "unknown backend 'nope'", "redis"
    )
    assert_one_line_error(
        invoke("run", "--url", REDIS_URL, "-p", "no_such_plugin", "qwtest_targets:noop"), "no_such_plugin"
    )
    assert_one_line_error(
        invoke("run", "--url", REDIS_URL, "--queue", "a:b", "qwtest_targets:noop"), "queue 'a:b'", "':'"
    )
    assert_one_line_error(
        invoke("run", "--url", REDIS_URL, "--queue", "x", "--queue", "x", "qwtest_targets:noop"),
        "queue 'x' is given twice",
    )
    for args in (["-w", "0"], ["-w", "x"], ["--prefetch", "0"], ["--level", "loud"], ["--grace", "-1"]):
        result = invoke("run", "--url", REDIS_URL, *args, "qwtest_targets:noop")
        assert result.exit_code == 2, args
        assert "Traceback" not in result.stderr
    bad_env = invoke("run", "--url", REDIS_URL, "qwtest_targets:noop", env={"QW_WORKERS": "-3"})
    assert bad_env.exit_code == 2
    assert "QW_WORKERS" in bad_env.stderr
    assert redis_db.keys("*") == []


@pytest.mark.slow
def test_embedded_on_a_port_given_and_a_port_taken() -> None:
    port = free_port()
    argv = [*script("qw"), "run", "--embedded", "--port", str(port), "-w", "1", "qw_core.examples:echo"]
    with Process(argv) as manager:
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(
            lambda: (
                manager.stderr.matching(lambda line: f"started with 1 worker on {url}" in line)
                or not manager.alive()
            ),
            what="the manager on the port given",
        )
        assert manager.alive(), manager.stderr.text()
        queued = run_script("qw", "enqueue", "--url", url, '{"on": "the port given"}')
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.strip()
        wait_for(lambda: manager.stdout.matching(lambda line: job_id in line), what="the job to run")

        taken = run_script("qw", "run", "--embedded", "--port", str(port), "qw_core.examples:echo")
        assert_one_line_error(taken, f"--port {port}: cannot listen on 127.0.0.1:{port}", "pick another port")
        assert manager.stop(signal.SIGTERM) == 0, manager.stderr.text()


def test_port_without_embedded_is_refused() -> None:
    assert "give --embedded too" in invoke("run", "--port", "7000", "x:y").stderr


def test_embedded_refuses_other_servers() -> None:
    assert "do not give --url" in invoke("run", "--embedded", "--url", REDIS_URL, "x:y").stderr
    assert "runs the redis backend" in invoke("run", "--embedded", "--backend", "memory", "x:y").stderr


@pytest.mark.slow
def test_unreachable_redis_says_what_to_do() -> None:
    done = run_script("qw", "run", "--url", DEAD_URL, "-w", "1", "qwtest_targets:noop")
    assert_one_line_error(done, "127.0.0.1:1", "start Redis", "qw run --embedded")


@pytest.mark.slow
def test_memory_backend_with_sample_jobs(record_dir: Path) -> None:
    with Process(
        [
            *script("qw"),
            "run",
            "--backend",
            "memory",
            "-w",
            "1",
            "--sample-jobs",
            "2",
            "qwtest_targets:record",
        ]
    ) as manager:
        ran = wait_for_records(record_dir, "ran", 2)
        assert sorted(r["data"]["sample"] for r in ran) == [1, 2]
        assert manager.stop(signal.SIGINT) == 0, manager.stderr.text()


@pytest.mark.slow
def test_a_blocked_builtin_plugin_stays_out_of_the_workers(record_dir: Path) -> None:
    # -p no:qw.builtin.logging: jobs run, and nobody logs them (a user's own logging
    # plugin would take over).
    argv = [*script("qw"), "run", "--backend", "memory", "-w", "1", "--sample-jobs", "2"]
    with Process([*argv, "-p", "no:qw.builtin.logging", "qwtest_targets:record"]) as manager:
        wait_for_records(record_dir, "ran", 2)
        assert manager.stop(signal.SIGINT) == 0, manager.stderr.text()
    log = manager.stderr.text()
    assert "manager" in log, "the manager's own lines remain"
    assert " succeeded on " not in log, log


@pytest.mark.redis
def test_an_event_loop_that_cannot_be_had_is_refused_in_one_line(
    redis_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bogus = invoke("run", "--url", REDIS_URL, "--event-loop", "trio", "qwtest_targets.concurrency:awork")
    assert bogus.exit_code == 2
    assert "'trio' is not one of 'auto', 'asyncio', 'uvloop'" in bogus.stderr
    assert "Traceback" not in bogus.stderr
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    assert_one_line_error(
        invoke("run", "--url", REDIS_URL, "--event-loop", "uvloop", "qwtest_targets.concurrency:awork"),
        "uvloop is not installed",
        "pip install 'qw-core[uvloop]'",
    )
    from_env = invoke(
        "run", "--url", REDIS_URL, "qwtest_targets.concurrency:awork", env={"QW_EVENT_LOOP": "uvloop"}
    )
    assert_one_line_error(from_env, "uvloop is not installed")
    assert redis_db.keys("*") == []
