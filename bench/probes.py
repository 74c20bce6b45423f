"""Measuring one step of ``backlog.py``: what Redis did meanwhile, and what a command cost.

* :class:`RedisWindow`: ``CONFIG RESETSTAT`` at the start, then ``INFO commandstats`` and
  ``INFO latencystats`` (Redis 7) at the end: calls and mean time per command, and the
  longest single call of each (its ``p100``; Redis keeps a histogram of every command's
  run time, to about 1%). Commands run inside a Lua script count as calls of their own
  too; the script's call (``evalsha``) includes them. The harness's own ``config`` and
  ``info`` calls are left out, and so are blocking commands (``blpop``), whose wait is
  no work.
* :func:`run_command`: a child process's wall time, peak RSS and CPU time (from
  ``wait4``'s resource usage, no extra package needed), with its stdout counted in lines.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

#: Commands the harness sends itself, and blocking waits: not the measured work.
IGNORED = frozenset({"config|resetstat", "config|set", "config|get", "info", "blpop", "brpop", "bzpopmin"})


def track_max_latency(client: redis.Redis) -> None:
    """Make ``INFO latencystats`` report each command's longest call (``p100``)."""
    client.config_set("latency-tracking", "yes")
    client.config_set("latency-tracking-info-percentiles", "50 99 100")


@dataclass
class CommandStats:
    """Redis's work over one window, per command name (``evalsha``, ``lrange``, ...)."""

    calls: dict[str, int] = field(default_factory=dict)
    usec: dict[str, int] = field(default_factory=dict)
    max_usec: dict[str, float] = field(default_factory=dict)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def slowest(self) -> tuple[str, float]:
        """The command whose longest call was longest, and that call in milliseconds."""
        if not self.max_usec:
            return "-", 0.0
        name = max(self.max_usec, key=lambda key: self.max_usec[key])
        return name, self.max_usec[name] / 1000

    def mean_ms(self, command: str) -> float:
        calls = self.calls.get(command, 0)
        return self.usec.get(command, 0) / calls / 1000 if calls else float("nan")

    def max_ms(self, command: str) -> float:
        return self.max_usec.get(command, float("nan")) / 1000

    def as_dict(self) -> dict[str, object]:
        name, longest = self.slowest()
        return {
            "calls": self.calls,
            "usec": self.usec,
            "max_usec": self.max_usec,
            "slowest": name,
            "max_command_ms": longest,
        }


class RedisWindow:
    """Redis's command statistics from now (reset here) to :meth:`read`."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        client.config_resetstat()

    def read(self) -> CommandStats:
        info = self.client.info("everything")
        stats = CommandStats()
        for key, value in info.items():
            if key.startswith("cmdstat_") and key[8:] not in IGNORED:
                stats.calls[key[8:]] = int(value["calls"])
                stats.usec[key[8:]] = int(value["usec"])
            elif key.startswith("latency_percentiles_usec_") and key[25:] not in IGNORED:
                stats.max_usec[key[25:]] = float(value["p100"])
        return stats


@dataclass
class CommandRun:
    """One run of a child process."""

    argv: list[str]
    seconds: float
    rss_mb: float
    cpu_seconds: float
    exit_code: int
    stdout_lines: int
    stderr_tail: str


def run_command(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float) -> CommandRun:
    """Run ``argv`` to its end (killed after ``timeout`` s); stdout goes to a temporary file."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), stdout=out, stderr=err, env=dict(env), cwd=cwd)
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: out.read(1 << 20), b""))
        err.seek(0)
        tail = err.read()[-500:].decode(errors="replace").strip()
    return CommandRun(
        argv=list(argv),
        seconds=seconds,
        rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        exit_code=process.returncode,
        stdout_lines=lines,
        stderr_tail=tail,
    )


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The sample at ``fraction`` of the sorted samples (nearest rank; 1.0 is the largest)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered), max(1, math.ceil(fraction * len(ordered)))) - 1]
