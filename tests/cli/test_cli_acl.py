"""The documented least-privilege ACL user is enough to run a manager and queue jobs.

The ACL line is read from the documentation itself (docs/how-to/secure-redis.md), so it
cannot drift from what works. It runs against a private redis-server (the test creates a
user).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cli_support import Process, run_script, script, wait_for, wait_for_records
from qwtest_redis import PrivateRedis

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PAGE = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "secure-redis.md"
PASSWORD = "qw-acl-Pa55"


def documented_acl_line() -> str:
    match = re.search(r"^ACL SETUSER qw .*$", PAGE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "docs/how-to/secure-redis.md documents the ACL line"
    return match.group(0).replace("CHANGE-ME", PASSWORD)


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        admin = redis.Redis(port=server.port)
        admin.execute_command(*shlex.split(documented_acl_line()))
        admin.close()
        yield server


def test_the_documented_acl_user_runs_a_manager_and_queues_jobs(server: PrivateRedis, tmp_path: Path) -> None:
    url = server.url(user="qw", password=PASSWORD)
    env = {"QWTEST_RECORD_DIR": str(tmp_path)}
    with Process(
        [*script("qw"), "run", "--url", url, "-w", "1", "-n", "acl", "qwtest_targets:record"], **env
    ) as run:
        queued = run_script("qw", "enqueue", "--url", url, "-", input='{"n": 1}\n{"n": 2}\n', **env)
        assert queued.returncode == 0, queued.stderr
        wait_for_records(tmp_path, "ran", 2)
        status = run_script("qw", "status", "--url", url, "--json", **env)
        assert status.returncode == 0, status.stderr
        assert PASSWORD not in status.stdout
        assert run.stop() == 0, run.stderr.text()
    assert "NOPERM" not in run.stderr.text()
    checker = redis.Redis.from_url(server.url(), decode_responses=True)
    wait_for(lambda: checker.smembers("all:managers") == set(), what="the manager to deregister")
    assert checker.keys("job:*") == []


def test_the_acl_user_cannot_touch_other_keys(server: PrivateRedis) -> None:
    client = redis.Redis.from_url(server.url(user="qw", password=PASSWORD))
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("somebody-elses:cache")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushall()
    client.close()


@pytest.mark.parametrize(
    "command",
    [
        ["FUNCTION", "FLUSH"],
        ["FUNCTION", "DELETE", "mylib"],
        ["FUNCTION", "RESTORE", b"\x00"],
        ["FUNCTION", "LOAD", "#!lua name=mylib\nredis.register_function('f', function() return 1 end)"],
        ["FCALL", "f", "0"],
        ["SCRIPT", "FLUSH"],
    ],
    ids=lambda command: " ".join(str(word) for word in command[:2]),
)
def test_the_acl_user_cannot_touch_the_servers_functions_or_scripts(
    server: PrivateRedis, command: list[object]
) -> None:
    # +@write grants FUNCTION FLUSH, DELETE and RESTORE (and @scripting FCALL): the line
    # takes functions back; qw only sends its own scripts with EVALSHA.
    client = redis.Redis.from_url(server.url(user="qw", password=PASSWORD))
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    finally:
        client.close()
