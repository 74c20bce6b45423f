"""The benchmark harness still runs qw: ``bench/run.py --quick`` for qw alone, small N, on
Redis and (``--backend postgres``) on PostgreSQL.

It starts its own redis-server (and PostgreSQL cluster) and installs nothing (qw runs
with this interpreter; no peer is selected), so it needs no network. It fails only if qw stops working in the
harness: it checks that the run completed and produced qw's row, never a timing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Where the PostgreSQL benchmark finds initdb and postgres (bench/pgserver.py's default).
PG_BIN = "/usr/lib/postgresql/15/bin"

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_quick_bench_runs_qw(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("the benchmark smoke test needs redis-server on the PATH", pytrace=False)
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--peers", "qw"]
    argv += ["--jobs", "400", "--single", "50", "--latency", "5"]
    argv += ["--results", str(tmp_path), "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| qw |")]
    assert len(rows) == 1, done.stdout
    result = json.loads(out.read_text())["results"]["qw"]
    assert "error" not in result, result["error"]
    assert "**" not in rows[0]  # a failure is shown in bold in the table
    assert result["drain_per_s"] > 0
    assert {"p50_ms", "p99_ms"} <= set(result["latency"])
    assert {"p50_ms", "p99_ms"} <= set(result["latency_manager"])


def test_quick_postgres_bench_runs_qw(tmp_path: Path) -> None:
    """``run.py --backend postgres`` starts its own PostgreSQL cluster (initdb from
    PostgreSQL 15's binaries) and measures qw-postgres there; no peer is installed."""
    if shutil.which("redis-server") is None:
        pytest.fail("the benchmark smoke test needs redis-server on the PATH", pytrace=False)
    if not (Path(PG_BIN) / "initdb").exists():
        pytest.fail(f"the PostgreSQL benchmark smoke test needs initdb in {PG_BIN}", pytrace=False)
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--backend", "postgres", "--quick"]
    argv += ["--peers", "qw-pg", "--jobs", "300", "--single", "30", "--latency", "5"]
    argv += ["--results", str(tmp_path), "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| qw-pg |")]
    assert len(rows) == 1, done.stdout
    assert "**" not in rows[0]  # a failure is shown in bold in the table
    document = json.loads(out.read_text())
    assert document["backend"] == "postgres"
    assert "synchronous_commit=on" in document["machine"]["postgres"]
    result = document["results"]["qw-pg"]
    assert "error" not in result, result["error"]
    assert result["drain_per_s"] > 0
    assert result["xacts_per_job"] > 0
    assert {"p50_ms", "p99_ms"} <= set(result["latency"])
    assert "qw-postgres" in result["version"]
