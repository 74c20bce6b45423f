"""The README's application and its test, run as written: copied out of README.md into a
fresh folder and run with ``python -m pytest`` there, as its reader would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from qwtest_readme import code_block, write_block


def test_the_readme_test_of_the_first_target_passes(tmp_path: Path) -> None:
    write_block(tmp_path, "myapp/jobs.py")
    write_block(tmp_path, "tests/test_jobs.py")
    (tmp_path / "myapp" / "__init__.py").touch()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of ours on the path
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = code_block("# tests/test_jobs.py").count("\ndef test_")
    assert tests >= 1
    assert f"{tests} passed" in result.stdout, result.stdout
