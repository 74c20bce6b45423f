"""Helpers for the CLI tests: running ``qw`` in-process and as a real process, and polling.

In-process runs use click's :class:`~click.testing.CliRunner` on the real entry point
objects; process runs use the installed console scripts (``qw``, ``qw-manager``,
``qw-client`` next to the running interpreter), falling back to ``python -m qw_cli`` for
``qw``. Waiting is always polling against a deadline, never a bare sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from click.testing import CliRunner, Result
from qwtest_redis import redis_url
from qwtest_wait import wait_for

from qw_cli.main import main

#: The Redis database the CLI tests own (flushed before and after each test that uses it).
REDIS_DB = int(os.environ.get("QWTEST_CLI_REDIS_DB", "7"))
REDIS_URL = redis_url(REDIS_DB)
#: A port nothing listens on (connections are refused at once).
DEAD_URL = "redis://127.0.0.1:1/0"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def invoke(
    *args: str, input: str | bytes | None = None, env: Mapping[str, str | None] | None = None
) -> Result:
    """Run ``qw ARGS`` in-process; ``QW_*`` variables of the outer environment are cleared."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("QW_")}
    clean.update(env or {})
    return CliRunner().invoke(
        main, list(args), input=input, env=clean, prog_name="qw", catch_exceptions=False
    )


def assert_one_line_error(result: Result | subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed with exactly one ``qw: error:`` line on stderr, and no traceback."""
    code = result.exit_code if isinstance(result, Result) else result.returncode
    stderr = result.stderr
    assert code != 0, f"exit code {code}; stderr: {stderr!r}"
    assert "Traceback" not in stderr + result.stdout, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert lines[0].startswith(("qw: error: ", "qw-client: error: ", "qw-manager: error: ")), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def script(name: str) -> list[str]:
    """The command line that runs console script ``name`` of this installation."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which(name)
    if found:
        return [found]
    if name == "qw":
        return [sys.executable, "-m", "qw_cli"]
    raise RuntimeError(f"console script {name!r} is not installed")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: ours without ``QW_*``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_script(
    name: str, *args: str, input: str | None = None, timeout: float = 30, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a console script to completion (in ``cwd``, if given)."""
    return subprocess.run(
        [*script(name), *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**env),
        check=False,
    )


class Lines:
    """Collects a stream's lines on a thread, so a test can wait for one without blocking."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def matching(self, predicate: Callable[[str], bool]) -> list[str]:
        return [line for line in self.snapshot() if predicate(line)]

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "\n".join(self.snapshot())


class Process:
    """A long-running console script (``qw run``, ``qw-manager``) with its output collected."""

    def __init__(self, argv: Sequence[str], cwd: Path | None = None, **env: str) -> None:
        self.popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(**env),
        )
        assert self.popen.stdout is not None
        assert self.popen.stderr is not None
        self.stdout = Lines(self.popen.stdout)
        self.stderr = Lines(self.popen.stderr)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``signum`` and wait for the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"process did not stop; stderr:\n{self.stderr.text()}") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()


def read_jsonl(directory: Path, prefix: str) -> list[dict[str, Any]]:
    """Every JSON line of the files ``prefix.*.jsonl`` under ``directory``."""
    rows: list[dict[str, Any]] = []
    for path in sorted(directory.glob(f"{prefix}.*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
    return rows


def wait_for_records(
    directory: Path, prefix: str, count: int, *, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Wait until ``directory`` holds at least ``count`` records of ``prefix``; return them all."""

    def enough() -> list[dict[str, Any]] | None:
        rows = read_jsonl(directory, prefix)
        return rows if len(rows) >= count else None

    return wait_for(enough, timeout=timeout, what=f"{count} {prefix!r} records")
