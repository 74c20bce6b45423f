"""``qw result ID``: what a job's target returned, from a real ``qw run`` on Redis."""

from __future__ import annotations

import json
import re
import signal
from typing import Any

import pytest
from cli_support import REDIS_URL, Process, assert_one_line_error, invoke, run_script, script

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def enqueue(data: str) -> str:
    queued = run_script("qw", "enqueue", "--url", REDIS_URL, data)
    assert queued.returncode == 0, queued.stderr
    return queued.stdout.strip()


def test_a_result_is_printed_once_the_job_ran(redis_db: Any) -> None:
    with Process(
        [*script("qw"), "run", "--url", REDIS_URL, "-w", "2", "qwtest_targets:echo_back"]
    ) as manager:
        job_id = enqueue('{"image": "cat.png"}')
        waited = run_script("qw", "result", "--url", REDIS_URL, "--wait", "20s", job_id)
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout) == {"echo": {"image": "cat.png"}, "job": job_id}
        record = json.loads(invoke("result", "--url", REDIS_URL, "--json", job_id).stdout)
        assert record["id"] == job_id
        assert record["value"] == {"echo": {"image": "cat.png"}, "job": job_id}
        assert re.fullmatch(r".+\.[0-9]+", record["worker"]), record["worker"]  # <manager>.<pid>

        silent = enqueue('{"nothing": true}')
        assert_one_line_error(
            invoke("result", "--url", REDIS_URL, "--wait", "1s", silent), f"no result for job {silent!r}"
        )
        assert manager.stop(signal.SIGTERM) == 0, manager.stderr.text()


def test_no_result_is_a_one_line_error(redis_db: Any) -> None:
    assert_one_line_error(
        invoke("result", "--url", REDIS_URL, "nope"), "no result for job 'nope'", "--wait DURATION"
    )
