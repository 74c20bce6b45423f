"""The README's application and its test, run as written: copied out of README.md into a
fresh folder and run with ``python -m pytest`` there, as its reader would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def code_block(first_line: str) -> str:
    """The fenced Python block of README.md that starts with ``first_line``."""
    blocks = re.findall(
        r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL
    )
    found = [block for block in blocks if block.startswith(first_line + "\n")]
    assert len(found) == 1, f"README.md has {len(found)} python blocks starting {first_line!r}"
    return found[0]


def test_the_readme_test_of_the_first_target_passes(tmp_path: Path) -> None:
    for name in ("myapp/jobs.py", "tests/test_jobs.py"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(code_block(f"# {name}"), encoding="utf-8")
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
    assert "2 passed" in result.stdout, result.stdout
