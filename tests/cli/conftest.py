"""Fixtures for the CLI tests: a private Redis database and a directory for records."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import FIXTURES, REDIS_DB
from qwtest_redis import flushed_db

#: The tiny plugin's source is importable in-process too (``-p qwtest_plugin``).
PLUGIN_SRC = FIXTURES / "dists" / "qwtest-plugin" / "src"
if str(PLUGIN_SRC) not in sys.path:
    sys.path.insert(0, str(PLUGIN_SRC))


@pytest.fixture
def redis_db() -> Iterator[Any]:
    """A client on the CLI tests' own Redis database, flushed before and after the test.

    Fails, never skips, when no Redis answers: CI always has one.
    """
    with flushed_db(REDIS_DB) as client:
        yield client


@pytest.fixture
def broker(redis_db: Any) -> Iterator[Any]:
    """A redis-backend broker on the same database."""
    from cli_support import REDIS_URL

    from qw_core.backends import open_broker

    opened = open_broker("redis", REDIS_URL)
    yield opened
    opened.close()


@pytest.fixture
def record_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory the fixture targets and plugins record into (``QWTEST_RECORD_DIR``)."""
    directory = tmp_path / "records"
    directory.mkdir()
    monkeypatch.setenv("QWTEST_RECORD_DIR", str(directory))
    return directory


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """``qw run`` configures the root logger; undo that after in-process runs."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
