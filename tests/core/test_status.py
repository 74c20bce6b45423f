"""The shared record a worker writes and its manager reads (qw_core.status)."""

from __future__ import annotations

import multiprocessing

from qw_core.status import DONE_BYTES, Busy, JobStatus


def new_status() -> JobStatus:
    return JobStatus(multiprocessing.get_context("spawn"))


def test_the_job_in_hand_is_reported_from_began_to_done() -> None:
    status = new_status()
    assert status.busy() is None
    status.began("job-ü")
    assert status.busy() == Busy("job-ü")
    status.started(None)
    status.ended()
    assert status.busy() == Busy("job-ü"), "hooks still run after the target returned"
    status.done()
    assert status.busy() is None


def test_an_id_too_long_to_report_is_busy_but_unknown() -> None:
    status = new_status()
    status.began("x" * 5000)
    assert status.busy() == Busy(None)


def test_successes_are_kept_until_settled() -> None:
    status = new_status()
    ids = ["a", "job-é", "\udcff-surrogate", "c" * 1024]
    for job_id in ids:
        status.succeeded(job_id)
    assert status.successes() == ids
    status.settled()
    assert status.successes() == []
    status.succeeded("d")
    assert status.successes() == ["d"]
    status.reset()
    assert status.successes() == []


def test_successes_past_the_room_are_dropped_whole() -> None:
    status = new_status()
    job_id = "j" * 1000
    fits = DONE_BYTES // (2 + len(job_id))
    for _ in range(fits + 3):
        status.succeeded(job_id)
    assert status.successes() == [job_id] * fits
