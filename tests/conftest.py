"""Shared test set-up: make the test helper modules under tests/fixtures importable.

Worker processes started with ``spawn`` import targets by name, so the fixtures folder
is also put on PYTHONPATH for child processes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(FIXTURES), os.environ.get("PYTHONPATH", "")) if p)

#: Folders whose test modules share one database on the machine's Redis.
SHARED_DB_FOLDERS = ("tests/cli/", "tests/plugins/")
#: The folder whose test modules each own a database on the machine's Redis.
DB_PER_MODULE_FOLDER = "tests/redis/"


def scheduling_scope(nodeid: str) -> str:
    """The unit ``pytest -n`` hands to one worker process: a test, a file, or a folder.

    Tests on the machine's shared Redis flush the database they own, so every test on one
    database must run in one worker, one after another: a module in tests/redis owns its
    database, and the modules of tests/cli (and of tests/plugins) share theirs. Any other
    test (private servers, the memory backend) is a unit of its own, which spreads the
    load best.
    """
    for folder in SHARED_DB_FOLDERS:
        if nodeid.startswith(folder):
            return folder
    if nodeid.startswith(DB_PER_MODULE_FOLDER):
        return nodeid.split("::", 1)[0]
    return nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under ``pytest -n N`` (pytest-xdist), schedule by :func:`scheduling_scope`."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedRedisScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scheduling_scope(nodeid)

    return SharedRedisScheduling(config, log)
