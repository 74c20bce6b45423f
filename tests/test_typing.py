"""What mypy sees of qw's typed API: each file under tests/typing is checked with mypy
--strict, and must draw exactly the errors its lines announce (``# E: CODE``), no more.

So a wrong call of a task function (``resize.enqueue(100)`` for ``resize(image: str)``)
is shown to be a mypy error, and a right one to be none.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CASES = sorted((Path(__file__).parent / "typing").glob("*_cases.py"))
EXPECTED = re.compile(r"#\s*E:\s*([a-z-]+)\s*$")
REPORTED = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<text>.*?)\s+\[(?P<code>[a-z-]+)\]$")


def expected_errors(path: Path) -> set[tuple[int, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {(number, match[1]) for number, line in enumerate(lines, 1) if (match := EXPECTED.search(line))}


@pytest.mark.parametrize("path", CASES, ids=lambda path: path.name)
def test_mypy_reports_exactly_the_announced_errors(path: Path, tmp_path: Path) -> None:
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n", encoding="utf-8")  # not the project's: it names the packages to check
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--strict",
            "--python-version",
            "3.10",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--show-error-codes",
            "--no-error-summary",
            "--hide-error-context",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
    reported = {
        (int(match["line"]), match["code"])
        for line in done.stdout.splitlines()
        if (match := REPORTED.match(line))
    }
    assert expected_errors(path), "a case file announces the errors it exists for"
    assert reported == expected_errors(path), done.stdout
