"""The two distributions build as separate wheels that install and work on their own.

Builds qw-core and qw-redis wheels from this checkout, installs just those two (their
dependencies come from the package index) into a fresh virtual environment, and checks
that both packages import and the ``qw`` command runs and finds both backends.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheels_install_into_a_clean_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT)
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT / "qw_redis")
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["qw_core", "qw_redis"]

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    bindir = env / "bin"
    run(bindir / "python", "-m", "pip", "install", "--quiet", *sorted(dist.glob("*.whl")))

    run(bindir / "python", "-c", "import qw_core, qw_redis, qw_cli")
    version = run(bindir / "qw", "--version")
    assert "1.0.0.dev0" in version
    backends = run(bindir / "qw", "backends")
    assert "memory" in backends
    assert "redis" in backends
    # the wheels carry their type information
    for package in ("qw_core", "qw_redis"):
        check = f"import importlib.resources as r; assert r.files({package!r}).joinpath('py.typed').is_file()"
        run(bindir / "python", "-c", check)
