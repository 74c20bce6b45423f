"""Fixtures for the reliability tests: a private redis-server per module, and record dirs.

Each module gets its own ``redis-server`` (with an append-only file, so a test may kill
and restart it without losing what it acknowledged); every test starts from an empty
server. Nothing here touches the shared Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from qwtest_redis import PrivateRedis


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateRedis]:
    with PrivateRedis(["--appendonly", "yes", "--appendfsync", "always"]) as private:
        yield private


@pytest.fixture
def url(server: PrivateRedis) -> str:
    """The private server's URL; the server is emptied before the test."""
    if server.process is None or server.process.poll() is not None:
        server.start()  # a test killed it and failed before restarting it
    client = redis.Redis.from_url(server.url())
    client.flushall()
    client.close()
    return server.url()


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    """A plain decoding client on the private server."""
    plain = redis.Redis.from_url(url, decode_responses=True)
    yield plain
    plain.close()


@pytest.fixture
def record_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where targets (and the recording manager plugin) write their records."""
    monkeypatch.setenv("QWTEST_RECORD_DIR", str(tmp_path))
    return tmp_path
