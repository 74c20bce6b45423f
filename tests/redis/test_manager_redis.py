"""A real manager with worker processes on a real Redis: 10,000 jobs, each run exactly once."""

from __future__ import annotations

import time

import pytest
import redis
from redis_support import redis_url

from qw_core.manager import Manager
from qw_core.models import Job
from qw_redis.broker import RedisBroker

pytestmark = pytest.mark.slow

REDIS_DB = 14
JOBS = 10_000


@pytest.fixture
def url(redis_db: int, real_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> str:
    url = redis_url(redis_db)
    monkeypatch.setenv("QWTEST_REDIS_URL", url)
    return url


def test_two_workers_run_10000_jobs_from_both_queues_exactly_once(url: str, real_client: redis.Redis) -> None:
    broker = RedisBroker.from_url(url)
    shared = [Job.new({"n": n}) for n in range(JOBS // 2)]
    private = [Job.new({"n": n}, manager="m10k") for n in range(JOBS // 2)]
    broker.queue_jobs(shared)
    broker.queue_jobs(private)
    manager = Manager("qwtest_targets:count_in_redis", broker, num_workers=2, name="m10k", block_timeout=0.2)
    manager.start()
    try:
        deadline = time.monotonic() + 120
        while real_client.hlen("qwtest:runs") < JOBS:
            assert time.monotonic() < deadline, f"only {real_client.hlen('qwtest:runs')} jobs ran"
            time.sleep(0.05)
        assert len(real_client.smembers("m10k:workers")) == 2
    finally:
        manager.stop()
        assert manager.join(timeout=30)

    runs = real_client.hgetall("qwtest:runs")
    assert runs == {job.id: "1" for job in shared + private}, "every job ran exactly once"
    # Counted by the heartbeat from the workers' shared counters, flushed as it stops.
    counted = sum(entry.counts.get("m10k", 0) for entry in broker.jobs_run(minutes=10))
    assert counted == JOBS, "every job begun is counted once in the throughput"
    assert real_client.keys("job:*") == []
    assert real_client.llen("all:jobs") == 0
    assert real_client.llen("m10k:jobs") == 0
    assert real_client.keys("m10k.*:jobs") == [], "no worker holds anything"
    assert real_client.smembers("all:managers") == set()
    assert real_client.smembers("m10k:workers") == set()
