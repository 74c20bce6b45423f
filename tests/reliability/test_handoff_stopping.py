"""Jobs queued while a manager stops and its workers still wait (registered for hand-offs
until their take returns): each runs at most once and ends in exactly one place, run or
back on its queue, never left on the list of a worker that is gone. (A guard: this held
when written.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from reliability_support import assert_each_job_in_one_place, runs, start_manager, wait_for

from qw_core.models import Job
from qw_redis import RedisBroker, keys

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
def test_jobs_queued_while_waiting_workers_stop_end_in_one_place(
    url: str, client: redis.Redis, record_dir: Path, cold: bool
) -> None:
    manager = start_manager(url, "hw", block_timeout=1.0)
    producer = RedisBroker.from_url(url)
    ids: list[str] = []
    try:
        wait_for(
            lambda: len(client.keys("qw:idling:hw.*")) == 2 and len(client.smembers("hw:workers")) == 2,
            what="both workers to wait",
        )
        manager.stop(cold=cold)
        while not manager.join(0):  # queue one job after another until it has stopped
            job = Job.new({"n": len(ids)}, manager="hw")
            producer.queue_jobs([job])
            ids.append(job.id)
    finally:
        producer.close()
        manager.stop(cold=True)
        assert manager.join(20)
    assert ids
    where = assert_each_job_in_one_place(client, ids)
    ran = runs(record_dir)
    assert all(ran[job_id] <= 1 for job_id in ids)
    assert {place for job_id, place in where.items() if not ran[job_id]} <= {"hw:jobs"}
    assert all(where[job_id] == "finished" for job_id in ids if ran[job_id])
    assert not client.keys("qw:idling:*")
    assert not client.keys("qw:handoff:*")
    assert not client.smembers("hw:workers")
    assert not client.keys(keys.queue("hw.*"))
