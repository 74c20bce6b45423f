"""A Redis that wants a password: a wrong one is one line without the password, the right one works."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, invoke, wait_for

pytestmark = pytest.mark.redis

PASSWORD = "s3cret-Pa55"


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private redis-server with ``requirepass``, on a free port; yields the port."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory: Path = tmp_path_factory.mktemp("locked-redis")
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def accepting() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    try:
        wait_for(accepting, timeout=10, what="the private redis-server")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_wrong_password_is_one_line_without_the_password(locked_redis: int) -> None:
    url = f"redis://:not-{PASSWORD}@127.0.0.1:{locked_redis}/0"
    for args in (["enqueue", "--url", url, "{}"], ["status", "--url", url]):
        line = assert_one_line_error(invoke(*args), "refused the login", "--url")
        assert PASSWORD not in line


def test_missing_password(locked_redis: int) -> None:
    assert_one_line_error(invoke("managers", "--url", f"redis://127.0.0.1:{locked_redis}/0"), "qw: error:")


def test_right_password_works_and_is_never_shown(locked_redis: int) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis}/0"
    queued = invoke("enqueue", "--url", url, '{"a": 1}')
    assert queued.exit_code == 0, queued.stderr
    report = invoke("status", "--json", "--url", url)
    assert json.loads(report.stdout)["queued"] == 1
    assert PASSWORD not in report.stdout
