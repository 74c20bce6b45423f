"""The backlog benchmark still runs: ``bench/backlog.py --quick``, every phase, small sizes.

It starts its own redis-server and installs nothing. It checks only that each phase ran
and reported a number for each of its metrics, never what the numbers are.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.redis]

PHASES = {"enqueue", "jobs", "drain", "status", "failed", "lateness"}


def test_quick_backlog_bench_reports_every_metric(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("the backlog benchmark smoke test needs redis-server on the PATH", pytrace=False)
    out = tmp_path / "backlog.json"
    argv = [sys.executable, str(ROOT / "bench" / "backlog.py"), "--quick"]
    argv += ["--results", str(tmp_path), "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {row["phase"] for row in rows} == PHASES
    for row in rows:
        assert "**" not in row["note"], row  # a failed phase, or a check that did not hold
        assert row["value"] is not None, row
        assert math.isfinite(row["value"]), row
    metrics = {row["metric"] for row in rows}
    for command in (
        "qw jobs",
        "qw jobs --all",
        "qw jobs --all --json",
        "qw failed requeue --all",
        "qw failed purge --all",
    ):
        assert {
            f"{command}: wall time",
            f"{command}: peak RSS",
            f"{command}: longest Redis command",
        } <= metrics
    assert {"qw status: wall time", "drain: failing jobs, 2 workers", "delayed job lateness: p99"} <= metrics
