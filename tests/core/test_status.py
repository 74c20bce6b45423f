"""The shared record a worker writes and its manager reads (qw_core.status)."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from qw_core.status import DONE_BYTES, FAILING_BYTES, Busy, JobStatus, id_digest


def new_status(slots: int = 1) -> JobStatus:
    return JobStatus(multiprocessing.get_context("spawn"), slots)


def test_the_job_in_hand_is_reported_from_began_to_done() -> None:
    status = new_status()
    assert status.in_hand() == []
    status.began("job-ü")
    assert status.in_hand() == [Busy("job-ü")]
    status.started(None)
    status.ended()
    assert status.in_hand() == [Busy("job-ü")], "hooks still run after the target returned"
    status.done()
    assert status.in_hand() == []


def test_the_job_in_hand_says_since_when() -> None:
    status = new_status()
    before = time.time()
    status.began("j1")
    [busy] = status.in_hand()
    assert before <= busy.began_at <= time.time()


def test_an_id_too_long_to_report_is_reported_by_its_digest() -> None:
    status = new_status()
    status.began("x" * 5000)
    assert status.in_hand() == [Busy(None, id_digest("x" * 5000))]
    assert id_digest("x" * 5000) != id_digest("x" * 5001)


def test_each_slot_reports_its_own_job_and_deadline() -> None:
    status = new_status(3)
    status.began("a", 0)
    status.began("c", 2)
    status.started(5.0, 2, kill_after=10.0)
    assert status.in_hand() == [Busy("a"), Busy("c")]
    [running] = status.running()
    assert (running.slot, running.job_id, running.limit, running.seq) == (2, "c", 5.0, 1)
    assert running.kill_at == pytest.approx(running.deadline + 10.0)
    assert status.seq(2) == 1
    assert status.seq(0) == 0
    status.abandoned(2)
    assert status.in_hand() == [Busy("a"), Busy("c")], "settled, but its thread may yet crash the process"
    [running] = status.running()
    assert running.abandoned, "still running, for the manager's last resort"
    status.ended(2)
    assert status.running() == []
    assert status.in_hand() == [Busy("a")], "its thread came back: no longer in hand"


def test_a_record_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        new_status(0)


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


def test_a_failure_not_written_yet_is_in_hand_until_written() -> None:
    status = new_status(2)
    status.began("running", 0)
    assert status.failing("failed-1")
    assert status.failing("failed-2")
    status.succeeded("ok")
    assert status.in_hand() == [Busy("running"), Busy("failed-1"), Busy("failed-2")]
    status.failures_written()
    assert status.in_hand() == [Busy("running")]
    assert status.successes() == ["ok"], "successes are settled apart"
    status.failing("failed-3")
    status.reset()
    assert status.in_hand() == []


def test_a_job_reported_both_running_and_failing_is_in_hand_once() -> None:
    status = new_status()
    status.began("j", 0)
    status.failing("j")  # between its failure and its slot's release
    assert status.in_hand() == [Busy("j")], "one job in hand: blamed alone, not a suspect"


def test_a_failure_that_does_not_fit_is_refused() -> None:
    status = new_status()
    job_id = "f" * 1000
    fits = FAILING_BYTES // (2 + len(job_id))
    assert all(status.failing(job_id) for _ in range(fits))
    assert not status.failing(job_id), "the worker writes this one at once"
    assert not status.failing("x" * 2000), "too long to report"


def test_successes_past_the_room_are_dropped_whole() -> None:
    status = new_status()
    job_id = "j" * 1000
    fits = DONE_BYTES // (2 + len(job_id))
    for _ in range(fits + 3):
        status.succeeded(job_id)
    assert status.successes() == [job_id] * fits
