"""Fixtures of the PostgreSQL backend's tests: a schema of their own on the test server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from qwtest_postgres import fresh_schema, schema_url

from qw_postgres.broker import PostgresBroker

# The reliability tests' helpers (records, managers, polling) serve these tests too.
RELIABILITY = str(Path(__file__).resolve().parent.parent / "reliability")
if RELIABILITY not in sys.path:
    sys.path.insert(0, RELIABILITY)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema name, dropped after the test."""
    with fresh_schema() as schema:
        yield schema


@pytest.fixture
def pg_url(pg_schema: str) -> str:
    """The URL of the test server with the test's own schema."""
    return schema_url(pg_schema)


@pytest.fixture
def pg_broker(pg_url: str) -> Iterator[PostgresBroker]:
    """A broker on the test's own (new, empty) schema."""
    broker = PostgresBroker.from_url(pg_url)
    yield broker
    broker.close()


@pytest.fixture
def record_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where targets (and the recording manager plugin) write their records."""
    monkeypatch.setenv("QWTEST_RECORD_DIR", str(tmp_path))
    return tmp_path
