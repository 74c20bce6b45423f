"""``qw result ID``: what a job's target returned, from a real ``qw run`` on Redis."""

from __future__ import annotations

import json
import re
import signal
import time
from typing import Any

import pytest
from cli_support import REDIS_URL, Process, assert_one_line_error, invoke, run_script, script

from qw_core import Failure, Job
from qw_redis import RedisBroker

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


def _job_state_once_run(job_id: str) -> dict[str, Any]:
    """``qw job --json ID`` once the job is neither queued nor held (20 s at most)."""
    deadline = time.monotonic() + 20
    while True:
        record: dict[str, Any] = json.loads(invoke("job", "--url", REDIS_URL, "--json", job_id).stdout)
        if record["state"] not in ("queued", "held"):
            return record
        assert time.monotonic() < deadline, f"job {job_id} did not run in 20 s: {record}"
        time.sleep(0.05)


def test_job_says_a_job_that_returned_nothing_succeeded_and_when(redis_db: Any) -> None:
    with Process([*script("qw"), "run", "--url", REDIS_URL, "qwtest_targets:noop"]) as manager:
        before = time.time()
        job_id = enqueue('{"nothing": "returned"}')
        record = _job_state_once_run(job_id)
        assert (record["state"], record["result"]) == ("succeeded", None)
        assert before - 5 <= record["finished_at"] <= time.time() + 5
        text = invoke("job", "--url", REDIS_URL, job_id[:8]).stdout.splitlines()  # the start of its id
        assert text[:2] == [f"id:      {job_id}", "state:   succeeded"]
        assert re.fullmatch(r"finished: \d{4}-\d\d-\d\dT.+", text[2]), text
        assert manager.stop(signal.SIGTERM) == 0, manager.stderr.text()


def test_with_nothing_kept_a_job_that_ran_is_unknown(redis_db: Any) -> None:
    with Process(
        [*script("qw"), "run", "--url", REDIS_URL, "--result-ttl", "0", "qwtest_targets:echo_back"]
    ) as manager:
        job_id = enqueue('{"n": 1}')
        assert _job_state_once_run(job_id)["state"] == "unknown"
        assert manager.stop(signal.SIGTERM) == 0, manager.stderr.text()


def test_no_result_is_a_one_line_error(redis_db: Any) -> None:
    assert_one_line_error(
        invoke("result", "--url", REDIS_URL, "nope"), "no result for job 'nope'", "--wait DURATION"
    )


def test_job_says_where_a_job_is(redis_db: Any) -> None:
    broker = RedisBroker.from_url(REDIS_URL)
    try:
        queued, later = Job.new({"to": "ann"}, queue="emails"), Job.new({"n": 1})
        broker.queue_jobs([queued])
        broker.queue_jobs([later], delay=3600)
        doomed = Job.new({"n": 2}, manager="m1")
        broker.queue_jobs([doomed])
        [taken] = broker.take(manager="m1", worker="m1.1")
        broker.fail_job(
            worker="m1.1", job=taken, failure=Failure(exc_type="ValueError", message="no", worker="m1.1")
        )
    finally:
        broker.close()
    text = invoke("job", "--url", REDIS_URL, queued.id[:10]).stdout.splitlines()  # the start of it
    assert text == [f"id:      {queued.id}", "state:   queued", "queue:   emails", 'data:    {"to": "ann"}']
    record = json.loads(invoke("job", "--url", REDIS_URL, "--json", later.id).stdout)
    assert (record["state"], record["queue"], record["data"]) == ("delayed", "default", {"n": 1})
    assert record["due_at"] > time.time() + 3000
    failed = json.loads(invoke("job", "--url", REDIS_URL, "--json", doomed.id[:8]).stdout)
    assert (failed["id"], failed["state"], failed["error"], failed["worker"]) == (
        doomed.id,
        "failed",
        "ValueError: no",
        "m1.1",
    )
    unknown = json.loads(invoke("job", "--url", REDIS_URL, "--json", "nope").stdout)
    assert unknown["state"] == "unknown"
