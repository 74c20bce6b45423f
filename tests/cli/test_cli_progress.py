"""Progress on long commands: ``qw enqueue --file`` with many jobs, ``qw failed requeue
--all`` and ``qw failed purge --all`` draw a bar on stderr when it is a terminal (a real
pseudo-terminal here), none when it is a pipe or with ``--quiet``, and say at the end
what they did."""

from __future__ import annotations

import errno
import os
import pty
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import REDIS_URL, child_env, script

from qw_cli.output import BAR_WIDTH, progress_bar
from qw_core import Failure, Job

pytestmark = pytest.mark.redis

#: Erases the progress line (carriage return, then erase to the end of the line).
CLEAR = "\r\x1b[K"


def run_on_terminal(*args: str, stdout: Path, timeout: float = 60) -> tuple[int, str]:
    """Run ``qw ARGS`` with stderr on a pseudo-terminal and stdout into the file ``stdout``;
    its exit code and everything written to the terminal (line ends as the program wrote
    them: the terminal's ``\\r\\n`` is read back as ``\\n``)."""
    master, slave = pty.openpty()
    with stdout.open("wb") as out:
        proc = subprocess.Popen(
            [*script("qw"), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=slave,
            env=child_env(),
        )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError as exc:  # the child closed the terminal: Linux reports EIO
                if exc.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


def run_piped(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``qw ARGS`` with stdout and stderr on pipes."""
    return subprocess.run(
        [*script("qw"), *args], capture_output=True, text=True, timeout=60, env=child_env(), check=False
    )


def jsonl(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(f'{{"n": {n}}}\n' for n in range(count)), encoding="utf-8")
    return path


def fail_many(broker: Any, count: int) -> list[str]:
    """``count`` jobs in the failed registry, oldest failure first."""
    broker.queue_jobs([Job.new({"n": n}) for n in range(count)])
    failed: list[str] = []
    while len(failed) < count:  # a take returns at most a batch
        for job in broker.take(manager="m1", worker="m1.1", limit=count - len(failed)):
            failure = Failure(exc_type="builtins.ValueError", message="bad", worker="m1.1")
            broker.fail_job(worker="m1.1", job=job, failure=failure)
            failed.append(job.id)
    return failed


def test_the_bar_shows_the_share_done() -> None:
    assert progress_bar("queued", 1000, 2500) == f"queued [{'#' * 9}{'-' * 15}] 1,000 of 2,500 (40%)"
    assert progress_bar("purged", 0, 0) == f"purged [{'#' * BAR_WIDTH}] 0 of 0 (100%)", (
        "nothing to do is done"
    )
    assert progress_bar("requeued", 7, 5).endswith("5 of 5 (100%)"), "never past the total"


def test_enqueue_of_many_lines_draws_a_bar_on_a_terminal(broker: Any, tmp_path: Path) -> None:
    path = jsonl(tmp_path, 2500)
    code, terminal = run_on_terminal(
        "enqueue", "--url", REDIS_URL, "--file", str(path), stdout=tmp_path / "out"
    )
    assert code == 0, terminal
    ids = (tmp_path / "out").read_text().split()
    assert len(ids) == 2500
    assert broker.queued_count() == 2500
    # The first update after the first batch (1,000 jobs) is always drawn; later ones at most
    # every 0.1 s, so which others appear depends on the machine's speed.
    assert f"\r{progress_bar('queued', 1000, 2500)}\x1b[K" in terminal
    assert terminal.endswith(f"{CLEAR}queued 2500 jobs\n"), "the bar is taken away before the count"


def test_enqueue_draws_no_bar_into_a_pipe_or_with_quiet(broker: Any, tmp_path: Path) -> None:
    path = jsonl(tmp_path, 2500)
    piped = run_piped("enqueue", "--url", REDIS_URL, "--file", str(path))
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "queued 2500 jobs\n", "only the count"
    assert len(piped.stdout.split()) == 2500

    code, terminal = run_on_terminal(
        "enqueue", "--url", REDIS_URL, "--quiet", "--file", str(path), stdout=tmp_path / "out"
    )
    assert code == 0, terminal
    assert terminal == "", "--quiet: neither a bar nor the count"
    assert len((tmp_path / "out").read_text().split()) == 2500, "the ids are still printed"
    assert broker.queued_count() == 5000


def test_enqueue_of_one_batch_draws_no_bar(broker: Any, tmp_path: Path) -> None:
    path = jsonl(tmp_path, 10)
    code, terminal = run_on_terminal(
        "enqueue", "--url", REDIS_URL, "--file", str(path), stdout=tmp_path / "out"
    )
    assert code == 0, terminal
    assert terminal == "queued 10 jobs\n", "one call to the broker has nothing to report half-way"


def test_requeue_all_draws_a_bar_on_a_terminal_and_says_what_it_did(broker: Any, tmp_path: Path) -> None:
    ids = fail_many(broker, 250)  # 100 a batch (qw_redis.administering.REQUEUE_BATCH)
    code, terminal = run_on_terminal(
        "failed", "requeue", "--all", "--url", REDIS_URL, stdout=tmp_path / "out"
    )
    assert code == 0, terminal
    assert (tmp_path / "out").read_text().split() == ids, "the ids alone on stdout, oldest failure first"
    assert f"\r{progress_bar('requeued', 100, 250)}\x1b[K" in terminal
    assert terminal.endswith(f"{CLEAR}requeued 250 jobs\n")
    assert broker.failed_count() == 0


def test_purge_all_draws_a_bar_on_a_terminal_and_says_what_it_did(broker: Any, tmp_path: Path) -> None:
    fail_many(broker, 250)
    code, terminal = run_on_terminal("failed", "purge", "--all", "--url", REDIS_URL, stdout=tmp_path / "out")
    assert code == 0, terminal
    assert f"\r{progress_bar('purged', 250, 250)}\x1b[K" in terminal
    assert terminal.endswith(f"{CLEAR}purged 250 failed jobs\n")
    assert broker.failed_count() == 0


@pytest.mark.parametrize("command", ["requeue", "purge"])
def test_requeue_and_purge_all_draw_no_bar_into_a_pipe_or_with_quiet(
    broker: Any, tmp_path: Path, command: str
) -> None:
    fail_many(broker, 150)
    piped = run_piped("failed", command, "--all", "--url", REDIS_URL)
    assert piped.returncode == 0, piped.stderr
    said = "requeued 150 jobs" if command == "requeue" else "purged 150 failed jobs"
    assert piped.stderr == f"{said}\n", "only what it did"

    fail_many(broker, 150)
    code, terminal = run_on_terminal(
        "failed", command, "--all", "-q", "--url", REDIS_URL, stdout=tmp_path / "out"
    )
    assert code == 0, terminal
    assert terminal == "", "--quiet: neither a bar nor the count"
    if command == "requeue":
        assert len((tmp_path / "out").read_text().split()) == 150, "the ids are still printed"
    assert broker.failed_count() == 0
