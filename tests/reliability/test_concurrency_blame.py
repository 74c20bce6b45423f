"""Who is blamed when a worker running several jobs at once dies or is killed.

The promise (docs/explanation/delivery.md, "A job kills its worker every time"; qw_core.status): the manager
blames the job a worker died running, and only it; with several in hand nobody knows, so
they all become suspects that run alone; an innocent job is never counted as a crash or
failed as timed out for what a sibling did.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import redis
from reliability_support import (
    RECORDING,
    assert_each_job_in_one_place,
    queue,
    records,
    runs,
    start_manager,
    stop_manager,
    wait_for,
)

from qw_core import RetryPolicy, execution
from qw_core.models import Job
from qw_redis import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

THREADS = "qwtest_targets.concurrency:work"
ASYNC = "qwtest_targets.concurrency:awork"
#: Longer than qw_core.status.MAX_ID_BYTES: the status record cannot report it.
LONG_ID = "long-" + "x" * 1100


def failed_ids(url: str) -> dict[str, str]:
    broker = RedisBroker.from_url(url)
    try:
        return {entry.job.id: entry.failure.kind for entry in broker.failed_jobs()}
    finally:
        broker.close()


def test_a_thread_left_running_past_its_limit_that_then_kills_the_process_gets_no_sibling_blamed(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    """A thread settled as timed out runs on (qw cannot stop it). When it later kills the
    process, the manager reads the slots: the abandoned one is not busy, the sibling's is,
    so the sibling alone is blamed, and with --max-recoveries 0 failed as crashed."""
    runaway = Job.new({"sleep": 1.0, "exit": 7}, meta={"timeout": 0.2})
    sibling = Job.new({"sleep": 4})
    job_ids = queue(url, [runaway, sibling])
    manager = start_manager(url, "ab", target=THREADS, concurrency=2, num_workers=1, max_recoveries=0)
    try:
        wait_for(
            lambda: records(record_dir, "died"), timeout=20, what="the runaway thread to kill its worker"
        )
        wait_for(
            lambda: runs(record_dir).get(sibling.id) or sibling.id in failed_ids(url),
            timeout=30,
            what="the sibling to run to its end, or to fail",
        )
    finally:
        stop_manager(manager)
    assert failed_ids(url) == {runaway.id: "timeout"}, "the sibling was blamed for the runaway thread's crash"
    assert assert_each_job_in_one_place(client, job_ids) == {runaway.id: "failed", sibling.id: "finished"}


@pytest.mark.parametrize(
    ("how", "target", "blocker_data"),
    [("async, time.sleep", ASYNC, {"block": 4}), ("threads, a C call holding the GIL", THREADS, {"gil": 27})],
)
def test_a_job_that_blocks_its_siblings_gets_no_sibling_failed_as_timed_out(  # noqa: PLR0917 - fixtures and parameters
    url: str,
    client: redis.Redis,
    record_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    target: str,
    blocker_data: dict[str, int],
) -> None:
    """``time.sleep`` in an async job blocks every task of the event loop; a C call that
    holds the GIL blocks every thread. A sibling that needs 0.1-0.3 s of its 1 s limit
    cannot be timed out by the worker (its loop is blocked too), so the manager kills the
    worker at the sibling's last-resort moment and fails the *sibling* as timed out
    (Manager._time_out blames the first slot past its kill_at); the blocker goes back
    uncounted and not even a suspect, free to do it again beside other jobs."""
    monkeypatch.setattr(execution, "LAST_RESORT", 1.0)  # the forked workers inherit it
    sibling = Job.new({"sleep": 0.3 if target == ASYNC else 0.1}, meta={"timeout": 1})
    blocker = Job.new(blocker_data)
    job_ids = queue(url, [sibling, blocker])
    manager = start_manager(url, "bl", target=target, concurrency=2, num_workers=1)
    try:
        wait_for(
            lambda: len(runs(record_dir)) == 2 or failed_ids(url),
            timeout=60,
            what="both jobs to run, or one to fail",
        )
        assert failed_ids(url) == {}, f"{how}: the sibling was failed as timed out for the blocker's doing"
        wait_for(lambda: len(runs(record_dir)) == 2, timeout=60, what="both jobs to run to their end")
    finally:
        stop_manager(manager, timeout=60)
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}


def test_a_worker_that_dies_with_two_jobs_in_hand_has_neither_counted_and_both_suspect(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    """Nobody knows which of two jobs in hand killed the process, so neither is counted
    (with --max-recoveries 0 a counted innocent would be failed as crashed at once): both
    go back as suspects, to run alone."""
    sibling, crasher = Job.new({"sleep": 5}), Job.new({"sleep": 0.3, "exit": 9})
    queue(url, [sibling, crasher])
    manager = start_manager(
        url,
        "tw",
        target=THREADS,
        concurrency=2,
        num_workers=1,
        max_recoveries=0,
        restart_backoff=(30.0, 30.0),
    )
    try:
        wait_for(lambda: records(record_dir, "died"), timeout=20, what="the crasher to kill its worker")
        suspects = {job.id: client.sismember("qw:suspects", job.id) for job in (sibling, crasher)}
        counted = {job.id: client.hexists("qw:recoveries", job.id) for job in (sibling, crasher)}
        failed = failed_ids(url)
    finally:
        manager.stop(cold=True)
        assert manager.join(20)
    assert failed == {}, "no job was failed as crashed"
    assert counted == {sibling.id: False, crasher.id: False}
    assert suspects == {sibling.id: True, crasher.id: True}


def test_a_job_whose_id_is_too_long_to_report_that_crashes_beside_others_is_suspect_or_counted(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    """The status record cannot hold an id over 1024 bytes (Busy(None)). Alone in hand,
    such a job counts every held job; beside others, the manager makes suspects of the
    known ids only: the crasher goes back neither counted nor suspect, so it is never
    isolated and crashes beside innocent jobs again and again."""
    crasher = attrs.evolve(Job.new({"sleep": 0.3, "exit": 9}), id=LONG_ID)
    sibling = Job.new({"sleep": 5})
    queue(url, [sibling, crasher])
    manager = start_manager(
        url, "li", target=THREADS, concurrency=2, num_workers=1, restart_backoff=(30.0, 30.0)
    )
    try:
        wait_for(lambda: records(record_dir, "died"), timeout=20, what="the crasher to kill its worker")
        suspect = client.sismember("qw:suspects", crasher.id)
        counted = client.hexists("qw:recoveries", crasher.id)
        sibling_suspect = client.sismember("qw:suspects", sibling.id)
    finally:
        manager.stop(cold=True)
        assert manager.join(20)
    assert sibling_suspect, "the sibling became a suspect"
    assert suspect or counted, "the crasher went back neither a suspect nor counted: it is never isolated"


def test_an_async_job_with_a_long_id_killed_as_a_last_resort_counts_no_sibling_as_crashed(
    url: str, client: redis.Redis, record_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async job that ignores its cancellation is killed as a last resort. With an id
    too long to report, Manager._time_out counts *every* job the worker held as a crash
    (made for one job at a time, where the others never ran); with jobs in flight beside
    it, the innocent siblings are counted, and with --max-recoveries 0 failed as crashed."""
    monkeypatch.setattr(execution, "LAST_RESORT", 1.0)
    deaf = attrs.evolve(Job.new({"deaf": 30}, meta={"timeout": 0.3}), id=LONG_ID)
    siblings = [Job.new({"sleep": 3, "n": n}) for n in range(2)]
    job_ids = queue(url, [deaf, *siblings])
    manager = start_manager(url, "lk", target=ASYNC, concurrency=3, num_workers=1, max_recoveries=0)
    try:
        wait_for(lambda: records(record_dir, "died"), timeout=20, what="the last-resort kill")
        wait_for(
            lambda: all(runs(record_dir).get(job.id) for job in siblings) or len(failed_ids(url)) > 1,
            timeout=30,
            what="the siblings to run again, or to fail",
        )
    finally:
        stop_manager(manager)
    failed = failed_ids(url)
    assert not {job.id for job in siblings} & set(failed), f"innocent siblings failed: {failed}"
    where = assert_each_job_in_one_place(client, job_ids)
    assert {where[job.id] for job in siblings} == {"finished"}


def test_a_timed_out_thread_job_that_cannot_be_settled_is_counted_when_its_worker_gives_up(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    """docs/explanation/delivery.md: "A worker that cannot settle a job for such an error after 5 tries exits,
    and its manager counts the job as a crash" (so it ends in the failed registry instead
    of looping). Here the retry cannot be written (``qw:due`` is another program's
    string, so retry.lua refuses). A job on a thread past its limit is marked abandoned
    (not busy) *before* the loop tries to settle it, so when the worker gives up the
    manager finds nothing in hand and puts the job back uncounted: it runs, times out and
    kills a worker again, for ever."""
    client.set("qw:due", "another program's string")
    job = Job.new({"sleep": 2}, meta={"timeout": 0.2})
    queue(url, [job])
    manager = start_manager(
        url,
        "us",
        target=THREADS,
        concurrency=2,
        num_workers=1,
        max_recoveries=0,
        plugins=attrs.evolve(RECORDING, retry=RetryPolicy(max_retries=3, backoff=5)),
    )
    try:
        wait_for(
            lambda: records(record_dir, "died"), timeout=30, what="the worker to give up settling the job"
        )
        counted = client.hexists("qw:recoveries", job.id) or job.id in failed_ids(url)
    finally:
        manager.stop(cold=True)
        assert manager.join(20)
    assert counted, "the job its worker could not settle went back uncounted (it will loop for ever)"
