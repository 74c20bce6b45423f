"""Fixtures for the dashboard's tests: a memory broker and a test client of the app."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from starlette.testclient import TestClient

from qw_core.dashboard import create_app
from qw_core.memory import MemoryBroker


@pytest.fixture
def memory() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


@pytest.fixture
def client(memory: MemoryBroker) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: memory, close_brokers=False, stream=False)) as client:
        yield client
