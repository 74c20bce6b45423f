"""The example third-party plugin (examples/qw-slowjobs), installed the way a user would.

It is built and installed with pip into a fresh virtual environment that sees this one's
packages through a ``.pth`` file (as tests/cli/test_cli_dists.py does), then found by
``qw plugins`` and used by ``qw run`` through its entry point alone, and its own tests
run against the installed copy.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest
from plugin_support import wait_for
from qwtest_venv import can_build_offline

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "qw-slowjobs"


def run(*args: str | Path, timeout: float = 180) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=timeout
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the venv's interpreter, the copied example) with the example installed."""
    work = tmp_path_factory.mktemp("slowjobs")
    source = shutil.copytree(EXAMPLE, work / "qw-slowjobs")  # the build writes next to its sources
    env = work / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (purelib / "_qw_parent_env.pth").write_text(
        "".join(f"import site; site.addsitedir({path!r})\n" for path in ours), encoding="utf-8"
    )
    offline = ["--no-build-isolation"] if can_build_offline() else []
    run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--disable-pip-version-check",
        *offline,
        source,
    )
    return python, source


def test_qw_plugins_finds_it_through_its_entry_point(installed: tuple[Path, Path]) -> None:
    python, _ = installed
    rows = json.loads(run(python, "-m", "qw_cli", "plugins", "--json"))
    assert {
        "name": "slowjobs",
        "distribution": "qw-slowjobs",
        "version": "0.1.0",
        "hooks": ["qw_job_run", "qw_plugins_loaded"],
    } in rows


def test_qw_run_logs_slow_jobs_with_no_configuration_but_a_threshold(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    python, _ = installed
    log = tmp_path / "run.log"
    argv = [python, "-m", "qw_cli", "run", "--backend", "memory", "-w", "1", "--sample-jobs", "2"]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*map(str, argv), "-o", "slowjobs.seconds=0", "qw_core.examples:echo"], stdout=out, stderr=out
        )
    try:
        wait_for(
            lambda: log.read_text().count("slow job ") >= 2 or process.poll() is not None,
            timeout=30,
            what="two slow-job lines",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    text = log.read_text()
    assert code == 0, text
    assert text.count("slow job ") == 2, text
    assert "threshold 0.000 s" in text


def test_its_own_tests_pass_against_the_installed_copy(installed: tuple[Path, Path]) -> None:
    python, source = installed
    output = run(
        python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", source, source / "tests"
    )
    assert re.search(r"(?m)^4 passed in ", output), output  # not "13 passed", nor "3 passed, 1 failed"
