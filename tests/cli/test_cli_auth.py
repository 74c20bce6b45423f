"""A Redis that wants a password: a wrong one is one line without the password, the right one works."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cli_support import Process, assert_one_line_error, invoke, script
from qwtest_redis import PrivateRedis
from qwtest_wait import wait_for

from qw_cli.cmdline import masked_command_line

pytestmark = pytest.mark.redis

PASSWORD = "s3cret-Pa55"


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[int]:
    """A private redis-server with ``requirepass``, on a free port; yields the port."""
    with PrivateRedis(["--requirepass", PASSWORD]) as server:
        yield server.port


def test_wrong_password_is_one_line_without_the_password(locked_redis: int) -> None:
    url = f"redis://:not-{PASSWORD}@127.0.0.1:{locked_redis}/0"
    for args in (["enqueue", "--url", url, "{}"], ["status", "--url", url]):
        line = assert_one_line_error(invoke(*args), "refused the login: check the user and password")
        assert PASSWORD not in line
        assert "start Redis" not in line, "Redis is running: the advice is about the URL"


def test_missing_password(locked_redis: int) -> None:
    result = invoke("managers", "--url", f"redis://127.0.0.1:{locked_redis}/0")
    line = assert_one_line_error(result, "wants a password: put it in the URL")
    assert "start Redis" not in line


def test_a_database_that_does_not_exist(locked_redis: int) -> None:
    result = invoke("status", "--url", f"redis://:{PASSWORD}@127.0.0.1:{locked_redis}/99")
    assert_one_line_error(result, "has no database 99 (it has 16: 0 to 15)")


def test_right_password_works_and_is_never_shown(locked_redis: int) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis}/0"
    queued = invoke("enqueue", "--url", url, '{"a": 1}')
    assert queued.exit_code == 0, queued.stderr
    report = invoke("status", "--json", "--url", url)
    assert json.loads(report.stdout)["queued"] == 1
    assert PASSWORD not in report.stdout


def test_qw_run_never_logs_the_password(locked_redis: int, record_dir: Any) -> None:
    # Everything qw run says while it starts, runs a job that fails and stops, at the most
    # verbose level: the password appears nowhere.
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis}/0"
    argv = [*script("qw"), "run", "--url", url, "-w", "1", "-l", "debug", "-n", "pw", "qwtest_targets:fail"]
    with Process(argv) as manager:
        queued = invoke("enqueue", "--url", url, '{"n": 1}')
        assert queued.exit_code == 0, queued.stderr
        wait_for(lambda: manager.stderr.matching(lambda line: "failed on" in line), what="the job to fail")
        assert manager.stop() == 0
    output = manager.stderr.text() + manager.stdout.text()
    assert "manager pw started" in output
    assert "raised builtins.ValueError" in output
    assert PASSWORD not in output


def test_no_command_line_of_qw_run_or_its_workers_shows_the_password(locked_redis: int) -> None:
    # Any user can read a command line (ps): qw hides the password in its own as it starts,
    # and its workers, forked from it, inherit that line and get the URL with its memory.
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis}/0"
    client = redis.Redis(port=locked_redis, password=PASSWORD, decode_responses=True)
    argv = [*script("qw"), "run", "--url", url, "-w", "2", "-n", "ps", "qwtest_targets:record"]
    with Process(argv) as manager:
        workers = wait_for(
            lambda: len(names := client.smembers("ps:workers")) == 2 and names, what="two workers"
        )
        pids = [manager.popen.pid, *(int(name.rpartition(".")[2]) for name in workers)]
        lines = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids}
        assert manager.stop() == 0
    client.close()
    masked = f"redis://:{'*' * len(PASSWORD)}@127.0.0.1:{locked_redis}/0".encode()
    for pid, line in lines.items():
        assert PASSWORD.encode() not in line, f"process {pid}: {line!r}"
        assert masked in line.split(b"\0"), f"process {pid}: {line!r}"


def test_each_credential_of_a_url_on_the_command_line_is_starred_in_place() -> None:
    line = "qw\0run\0--url\0redis://:pw@h/0\0--url=rediss://u:pa%40ss@h/0?ssl_password=kp\0é:f\0".encode()
    masked = masked_command_line(line)
    assert masked == (
        "qw\0run\0--url\0redis://:**@h/0\0--url=rediss://u:*******@h/0?ssl_password=**\0é:f\0".encode()
    )
    assert len(masked) == len(line)
