"""The README's applications and their tests, run as written: copied out of README.md into
a fresh folder and run with ``python -m pytest`` there, as its reader would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from qwtest_readme import code_block, write_block


@pytest.mark.parametrize(
    ("module", "test"), [("myapp/tasks.py", "tests/test_tasks.py"), ("myapp/jobs.py", "tests/test_jobs.py")]
)
def test_the_readme_tests_pass(tmp_path: Path, module: str, test: str) -> None:
    write_block(tmp_path, module)
    write_block(tmp_path, test)
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
    tests = code_block(f"# {test}").count("\ndef test_")
    assert tests >= 1
    assert f"{tests} passed" in result.stdout, result.stdout


def test_the_readme_plugin_is_the_one_the_plugin_guide_tests() -> None:
    """The README's plugin is copied from docs/how-to/write-a-plugin.md, whose blocks run in
    test_docs_examples.py (a plugin module and its test with a real worker)."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "how-to" / "write-a-plugin.md").read_text()
    assert "```python\n" + code_block("# myplugins/cancel.py") + "```" in guide
