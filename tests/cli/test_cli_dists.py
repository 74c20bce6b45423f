"""Installed distributions are found through entry points alone: a plugin and a backend.

Builds the two tiny projects under ``tests/fixtures/dists`` and installs them with pip into
a fresh virtual environment that sees this environment's packages (qw-core and its
dependencies) through a ``.pth`` file, which keeps the test fast and offline when
setuptools is at hand. Then ``qw plugins``, ``qw backends`` and ``qw run --backend tiny``
run in that environment.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest
from cli_support import FIXTURES, Process, invoke, read_jsonl, wait_for
from qwtest_venv import can_build_offline

pytestmark = pytest.mark.slow

DISTS = FIXTURES / "dists"


def run(*args: str | Path) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh venv holding the two tiny distributions."""
    work = tmp_path_factory.mktemp("dists")
    sources = [shutil.copytree(DISTS / name, work / name) for name in ("qwtest-plugin", "qwtest-backend")]
    env = work / "venv"  # builds write egg-info next to the sources: copies keep the repo clean
    venv.create(env, with_pip=False)
    interpreter = env / "bin" / "python"
    purelib = Path(
        run(interpreter, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in ours)
    (purelib / "_qwtest_parent_env.pth").write_text(lines, encoding="utf-8")
    offline = ["--no-build-isolation"] if can_build_offline() else []  # else pip fetches setuptools
    pip: list[str | Path] = [
        interpreter,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--disable-pip-version-check",
    ]
    run(*pip, *offline, *sources)
    return interpreter


def test_this_environment_does_not_have_them() -> None:
    assert "tiny" not in invoke("backends").stdout
    assert "qwtest-plugin" not in invoke("plugins").stdout


def test_plugins_lists_the_installed_plugin(python: Path) -> None:
    rows = json.loads(run(python, "-m", "qw_cli", "plugins", "--json"))
    assert {
        "name": "qwtest",
        "distribution": "qwtest-plugin",
        "version": "0.1.0",
        "hooks": ["qw_job_queued", "qw_manager_started"],
    } in rows
    table = run(python, "-m", "qw_cli", "plugins")
    assert any(line.split()[:3] == ["qwtest", "qwtest-plugin", "0.1.0"] for line in table.splitlines())


def test_backends_lists_the_installed_backend(python: Path) -> None:
    rows = json.loads(run(python, "-m", "qw_cli", "backends", "--json"))
    assert {
        "name": "tiny",
        "distribution": "qwtest-backend",
        "version": "0.2.0",
        "class": "qwtest_backend:TinyBroker",
    } in rows
    assert {"memory", "redis", "tiny"} <= {row["name"] for row in rows}


def test_run_uses_the_installed_backend_and_plugin(python: Path, record_dir: Path) -> None:
    argv = [str(python), "-m", "qw_cli", "run", "--backend", "tiny", "-w", "1", "--sample-jobs", "2"]
    with Process([*argv, "qw_core.examples:echo"]) as manager:
        wait_for(
            lambda: len(manager.stdout.snapshot()) >= 2 or not manager.alive(), timeout=20, what="2 echoes"
        )
        assert len(manager.stdout.snapshot()) == 2, manager.stderr.text()
        assert manager.stop(signal.SIGTERM) == 0, manager.stderr.text()
    assert "started with 1 worker on tiny://" in manager.stderr.text()
    hooks = read_jsonl(record_dir, "plugin")
    assert [r["hook"] for r in hooks].count("qw_job_queued") == 2
    (started,) = [r for r in hooks if r["hook"] == "qw_manager_started"]
    assert started["backend"] == "tiny://"


def test_unknown_backend_suggests_the_installed_one(python: Path) -> None:
    done = subprocess.run(
        [str(python), "-m", "qw_cli", "run", "--backend", "tiney", "x:y"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "qw: error: unknown backend 'tiney' (installed: memory, postgres, redis, tiny); did you mean 'tiny'?"
    )
