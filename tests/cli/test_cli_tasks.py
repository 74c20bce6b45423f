"""The README's task functions as written: ``qw run myapp.tasks:router`` (embedded, no Redis
of ours), a call queued with the README's own ``python -c`` line, one queued by another
program with ``qw enqueue`` in the documented wire format, and one that names no task."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import Process, child_env, run_script, script, wait_for
from qwtest_readme import code_block, write_block

QUICKSTART = "qw run -w 4 myapp.tasks:router                # the router is the target"


@pytest.mark.slow
def test_the_readme_task_functions_run_under_qw_run(tmp_path: Path) -> None:
    write_block(tmp_path, "myapp/tasks.py")
    run_line, enqueue_line, *_ = code_block(QUICKSTART, "console").splitlines()
    assert run_line.split("#")[0].split() == ["qw", "run", "-w", "4", "myapp.tasks:router"]
    argv = [*script("qw"), "run", "--embedded", "-w", "2", "myapp.tasks:router"]
    with Process(argv, cwd=tmp_path) as manager:
        hint = wait_for(
            lambda: manager.stderr.matching(lambda line: "qw enqueue --url" in line) or not manager.alive(),
            what="the URL line",
        )
        assert manager.alive(), manager.stderr.text()
        url = re.search(r"--url (redis://127\.0\.0\.1:\d+/0)", hint[0]).group(1)  # type: ignore[union-attr]

        python, *args = shlex.split(enqueue_line)
        assert python == "python"
        queued = subprocess.run(
            [sys.executable, *args],  # the README's line, with this installation's python
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(QW_URL=url),
            check=False,
        )
        assert queued.returncode == 0, queued.stderr
        assert re.fullmatch(r"[0-9a-f-]{36}\n", queued.stdout), queued.stdout
        wire = '{"task": "myapp.tasks:notify", "args": ["ada"], "kwargs": {"message": "hi"}}'
        sent = run_script("qw", "enqueue", "--url", url, wire, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        nothing = run_script("qw", "enqueue", "--url", url, '{"task": "myapp.tasks:crop"}', cwd=tmp_path)
        assert nothing.returncode == 0, nothing.stderr

        wait_for(lambda: "resizing cat.png to 100" in manager.stdout.snapshot(), what="the queued call")
        wait_for(lambda: "notified ada" in manager.stdout.snapshot(), what="the call from qw enqueue")
        failed = wait_for(
            lambda: (listed := run_script("qw", "failed", "--url", url)).stdout.strip() and listed,
            what="the unknown task in the failed registry",
        )
        assert "UnknownTask" in failed.stdout, failed.stdout
        assert nothing.stdout.strip() in failed.stdout
        assert manager.stop(signal.SIGTERM) == 0, manager.stderr.text()
