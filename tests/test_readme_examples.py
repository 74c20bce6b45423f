"""The README's application and its test, run as written: copied out of README.md into a
fresh folder and run with ``python -m pytest`` there, as its reader would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from qwtest_readme import write_block


def run_pytest(folder: Path) -> subprocess.CompletedProcess[str]:
    """``python -m pytest tests`` in ``folder``, with nothing of ours on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "tests"],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_readme_test_of_the_first_target_passes(tmp_path: Path) -> None:
    write_block(tmp_path, "myapp/jobs.py")
    write_block(tmp_path, "tests/test_jobs.py")
    (tmp_path / "myapp" / "__init__.py").touch()
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout


def test_the_readme_test_of_the_task_functions_passes(tmp_path: Path) -> None:
    write_block(tmp_path, "myapp/tasks.py")
    write_block(tmp_path, "tests/test_tasks.py")
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout
