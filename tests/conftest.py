"""Shared test set-up: make the test helper modules under tests/fixtures importable.

Worker processes started with ``spawn`` import targets by name, so the fixtures folder
is also put on PYTHONPATH for child processes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"

if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(FIXTURES), os.environ.get("PYTHONPATH", "")) if p)
