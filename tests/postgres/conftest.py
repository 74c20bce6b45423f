"""Fixtures of the PostgreSQL backend's tests: a schema of their own on the test server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from qwtest_postgres import fresh_schema, schema_url

from qw_postgres.broker import PostgresBroker


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
