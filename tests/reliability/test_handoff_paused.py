"""A worker stopped (SIGSTOP) while it blocks in its wait for jobs, and handed a job then.

Redis answers the wait at once (the hand-off pops off ``qw:handoff:<w>``), but the reply
sits unread in the stopped process's socket. If the pause outlasts the heartbeat TTL, a
reaper puts the job back and another worker runs it; the delivery guarantees say a job
the worker had taken and not started does not run again when it comes back (it checks
that it still holds it first). The reply read after the pause must not run it again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis
from reliability_support import (
    assert_each_job_in_one_place,
    records,
    runs,
    start_manager,
    stop_manager,
    wait_for,
    worker_pids,
)

from qw_core.models import Job
from qw_redis import RedisBroker, keys

pytestmark = [pytest.mark.redis, pytest.mark.slow]

NAME = "hp"


def _blocked(client: redis.Redis) -> int:
    """How many clients block in a command (the waiting workers' BLPOPs)."""
    return sum(1 for entry in client.client_list() if "b" in entry["flags"])


def _waiting(client: redis.Redis, pids: list[int]) -> bool:
    """Both workers are registered as waiting and block in their wait."""
    return all(client.exists(keys.idling(f"{NAME}.{pid}")) for pid in pids) and _blocked(client) == 2


def _hand_to_a_stopped_worker(client: redis.Redis, producer: RedisBroker, pids: list[int]) -> tuple[Job, int]:
    """Stop both workers while both block in their wait, then queue a job: it is handed
    to one of them, whose BLPOP pops it (the reply waits in the stopped process's socket).
    Returns the job and that worker's pid; the other worker is resumed."""
    for _ in range(50):
        wait_for(lambda: _waiting(client, pids), what="both workers to block in their wait")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        if _waiting(client, pids):  # still blocked, now that they cannot move
            job = Job.new({"n": 1}, manager=NAME)
            producer.queue_jobs([job])
            holder = [pid for pid in pids if client.lrange(f"{NAME}.{pid}:jobs", 0, -1) == [job.id]]
            if holder and not client.exists(keys.handoff(f"{NAME}.{holder[0]}")):  # popped by its BLPOP
                for pid in pids:
                    if pid != holder[0]:
                        os.kill(pid, signal.SIGCONT)
                return job, holder[0]
            raise AssertionError("the job was queued to two blocked workers but not handed off")
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    raise AssertionError("could not stop the workers while both waited")


def test_a_job_handed_to_a_worker_stopped_in_its_wait_does_not_run_again_after_its_reaping(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    manager = start_manager(url, NAME)
    producer = RedisBroker.from_url(url)
    stopped: int | None = None
    try:
        wait_for(lambda: len(worker_pids(manager)) == 2, what="two workers")
        pids = worker_pids(manager)
        job, stopped = _hand_to_a_stopped_worker(client, producer, pids)
        wait_for(lambda: records(record_dir, "reaped"), what="the stopped worker to be reaped")
        wait_for(lambda: runs(record_dir)[job.id] == 1, what="the other worker to run the job")
        os.kill(stopped, signal.SIGCONT)
        resumed, stopped = stopped, None
        # The resumed worker reads the stale reply, deals with it, and waits again.
        wait_for(
            lambda: client.exists(keys.idling(f"{NAME}.{resumed}")), what="the resumed worker to wait again"
        )
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        producer.close()
        stop_manager(manager)
    assert runs(record_dir)[job.id] == 1, "the job ran again on the worker that was stopped holding it"
    assert set(assert_each_job_in_one_place(client, [job.id]).values()) == {"finished"}
