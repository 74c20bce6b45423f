"""A key prefix (:class:`qw_redis.keys.KeySchema`, one shard of a Redis Cluster) is the only
difference between a prefixed keyspace and the original schema.

The same workload (every kind of queueing, taking, finishing, failing, retrying, releasing,
recovering, reaping, heartbeats, schedules, results, requeueing) runs on a single-node
broker and on a prefixed one, on two databases: every key the prefixed one wrote carries the
prefix, and without it the two databases hold the same keys with the same types. A key
spelt somewhere without the prefix (in Python or in a Lua script) fails the first check;
a key built differently fails the second.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import redis
from qwtest_redis import flushed_db
from redis_support import redis_url

from qw_core.models import Failure, Job
from qw_core.unique import UNIQUE_META
from qw_redis import keys
from qw_redis.broker import RedisBroker

REDIS_DB = 13
OTHER_DB = 14
PREFIX = "{qw7}"
M, W = "m1", "m1.101"


@pytest.fixture
def other_client() -> Iterator[redis.Redis]:
    with flushed_db(OTHER_DB) as client:
        yield client


def _workload(broker: RedisBroker) -> None:
    broker.register_manager(M)
    broker.register_worker(manager=M, worker=W)
    broker.beat(manager=M, token="t", workers={W: "tw"}, ttl=30, running={W: {"j-shared": 1.0}})
    broker.queue_jobs(
        [
            Job(id="j-shared", data={"n": 1}),
            Job(id="j-manager", data={"n": 2}, manager=M),
            Job(id="j-named", data={"n": 3}, queue="q1"),
            Job(id="j-worker", data={"n": 4}, worker=W),
            Job(id="j-unique", data={"n": 5}, meta={UNIQUE_META: {"key": "k1"}}),
        ]
    )
    broker.queue_jobs([Job(id="j-later", data={"n": 6}, manager=M)], delay=600)
    taken = broker.take(manager=M, worker=W, limit=10, queues=["default", "q1"])
    assert {job.id for job in taken} == {"j-shared", "j-manager", "j-named", "j-worker", "j-unique"}
    broker.finish_with_result(worker=W, job_id="j-shared", result='"ok"', ttl=60)
    broker.finish_jobs(worker=W, job_ids=["j-manager"], keep_finished=60)
    broker.fail_job(worker=W, job=taken[0], failure=Failure(kind="error", exc_type="E", message="m"))
    broker.retry_job(worker=W, job=Job(id="j-named", data={"n": 3}, queue="q1"), delay=300)
    broker.release_jobs(worker=W, job_ids=["j-worker"])
    broker.take(manager=M, worker=W, limit=10, queues=["default", "q1"])
    broker.nudge(W)
    broker.note_jobs_run(manager=M, count=3)
    broker.declare_schedules(manager=M, declarations={"s1": '{"cron": "* * * * *"}'}, ttl=30)
    broker.enqueue_tick("s1", 60.0, Job(id="j-tick", data={}), manager=M)
    for failed in broker.failed_jobs():
        broker.requeue_failed(failed.job.id)
    broker.recover_worker(manager=M, worker=W, max_recoveries=3)
    broker.beat(manager=M, token="t", workers={}, ttl=0.05)
    deadline = time.monotonic() + 10
    while broker.heartbeat_of(M) is not None:  # lapsed: the reaper deregisters the manager
        assert time.monotonic() < deadline, "the heartbeat did not lapse"
        time.sleep(0.01)
    broker.reap(owner="r", lease=1, ttl=0.05)
    broker.problems()
    broker.stray_queues()


def _shape(client: redis.Redis, prefix: str) -> dict[str, str]:
    """Key (prefix removed, producer tokens and minutes masked) → type."""
    shape = {}
    for key in client.scan_iter("*"):
        assert key.startswith(prefix), key
        name = re.sub(r"^(qw:producer:).*", r"\1*", key[len(prefix) :])
        shape[re.sub(r"^(qw:jobs-run:)\d+", r"\1*", name)] = client.type(key)
    return shape


def test_a_prefixed_keyspace_is_the_original_schema_with_the_prefix_before_every_key(
    real_client: redis.Redis, other_client: redis.Redis
) -> None:
    plain = RedisBroker.from_url(redis_url(REDIS_DB))
    prefixed = RedisBroker(other_client, schema=keys.KeySchema(PREFIX))
    try:
        _workload(plain)
        _workload(prefixed)
        original = _shape(real_client, "")
        assert "all:jobs" in original or "qw:queue:q1" in original  # the workload left jobs queued
        assert _shape(other_client, PREFIX) == original
    finally:
        plain.close()
        prefixed.close()


def test_the_single_node_schema_has_no_prefix() -> None:
    schema = keys.SINGLE_NODE
    assert (schema.ALL_JOBS, schema.queue("m"), schema.job("1")) == ("all:jobs", "m:jobs", "job:1")
    assert schema.lua_prelude == keys.LUA_PRELUDE
    tagged = keys.KeySchema(PREFIX)
    assert (tagged.ALL_JOBS, tagged.queue("m"), tagged.queue_list("queue:q")) == (
        "{qw7}all:jobs",
        "{qw7}m:jobs",
        "{qw7}qw:queue:q",
    )


@pytest.mark.parametrize("prefix", ["'", "a\\b", "*", "{a}?"])
def test_a_prefix_that_would_break_lua_or_a_scan_pattern_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="key prefix"):
        keys.KeySchema(prefix)
