"""Shared test set-up: the test helper modules under tests/fixtures, and a check that
``redis-server`` exists before anything runs.

Worker processes started with ``spawn`` import targets by name, so the fixtures folder
is also put on PYTHONPATH for child processes.

Every test process starts the Redis servers it needs itself (``qwtest_redis``): the suite
never touches the machine's own Redis, so pytest-xdist may hand any test to any process.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import settings

FIXTURES = Path(__file__).parent / "fixtures"

# No per-example deadline: it is a wall-clock bound (200 ms by default) that a loaded CI
# machine breaks with examples that are merely slow, not wrong.
settings.register_profile("qw", deadline=None)
settings.load_profile("qw")

if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(FIXTURES), os.environ.get("PYTHONPATH", "")) if p)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, in one line, when the tests' Redis servers cannot be started."""
    from qwtest_redis import INSTALL_HINT

    if shutil.which("redis-server") is None:
        message = f"redis-server is not on the PATH: {INSTALL_HINT}"
        pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)
