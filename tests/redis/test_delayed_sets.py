"""Delayed jobs wait in one sorted set per queue, indexed by ``qw:due``: counting one queue's
delayed jobs costs one command however many are delayed, and jobs qw delayed before 1.0
(all in ``qw:delayed``) are sorted into the sets by the next take. On a real Redis."""

from __future__ import annotations

import time

import redis

from qw_core.models import Job
from qw_redis import keys
from qw_redis.broker import RedisBroker

REDIS_DB = 5
M, W = "m1", "m1.101"


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Commands the server ran since the last ``CONFIG RESETSTAT`` (inside scripts too)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}


def test_counting_a_queues_delayed_jobs_reads_none_of_them(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_broker.queue_jobs([Job.new({"n": n}, manager=M) for n in range(2000)], delay=60)
    real_broker.queue_jobs([Job.new({"n": n}) for n in range(300)], delay=60)
    real_broker.queue_jobs([Job.new({"n": n}, manager="m2") for n in range(5)], delay=60)
    real_client.config_resetstat()
    counts = [real_broker.delayed_count(M), real_broker.delayed_count(None), real_broker.delayed_count("m3")]
    calls = command_calls(real_client)
    assert counts == [2000, 300, 0]
    assert calls.pop("zcard") == 3
    assert set(calls) <= {"info", "config|resetstat"}, "no id, origin or other queue was read"


def test_listing_one_queues_delayed_jobs_reads_only_its_set(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    mine = [Job.new({"n": n}, manager=M) for n in range(3)]
    real_broker.queue_jobs([Job.new({"n": n}) for n in range(500)], delay=60)
    real_broker.queue_jobs(mine, delay=30)
    real_client.config_resetstat()
    assert real_broker.delayed_job_ids(M) == [job.id for job in mine]
    assert command_calls(real_client).get("zrange") == 1
    assert "hmget" not in command_calls(real_client)


def test_the_due_index_holds_each_queues_soonest_due_time(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    later, sooner = Job.new({"n": 1}, manager=M), Job.new({"n": 2}, manager=M)
    real_broker.queue_jobs([later], delay=100)
    real_broker.queue_jobs([sooner], at=time.time() + 0.3)
    due = dict(real_client.zrange(keys.delayed(M), 0, -1, withscores=True))
    assert real_client.zscore(keys.DUE, M) == due[sooner.id], "an earlier job lowers it"
    [taken] = real_broker.take(manager=M, worker=W, timeout=5.0)
    assert taken.id == sooner.id
    assert real_client.zscore(keys.DUE, M) == due[later.id], "once it moved, the next one's"
    assert real_broker.delayed_job_ids(M) == [later.id]


def test_jobs_delayed_before_1_0_are_sorted_into_their_queues_sets_by_a_take(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    due_now, shared_later = Job.new({"n": 1}, manager=M), Job.new({"n": 2})
    mine_later = Job.new({"n": 3}, manager=M)
    real_broker.queue_jobs([due_now, shared_later, mine_later], delay=60)
    # Rewrite them as qw before 1.0 kept them: every id in qw:delayed, its queue in qw:origin.
    (seconds, _) = real_client.time()
    legacy = {due_now.id: seconds - 1.0, shared_later.id: seconds + 60.0, mine_later.id: seconds + 90.0}
    real_client.delete(keys.delayed(M), keys.delayed(None), keys.DUE)
    real_client.zadd(keys.LEGACY_DELAYED, legacy)
    real_client.hset(keys.ORIGIN, mapping={due_now.id: M, shared_later.id: "", mine_later.id: M})

    [taken] = real_broker.take(manager=M, worker=W)

    assert taken.id == due_now.id, "the job that was due ran"
    assert not real_client.exists(keys.LEGACY_DELAYED)
    assert real_client.hgetall(keys.ORIGIN) == {due_now.id: M}, "only the held job's entry is left"
    assert dict(real_client.zrange(keys.delayed(None), 0, -1, withscores=True)) == {
        shared_later.id: legacy[shared_later.id]
    }
    assert dict(real_client.zrange(keys.delayed(M), 0, -1, withscores=True)) == {
        mine_later.id: legacy[mine_later.id]
    }
    assert (real_broker.delayed_count(M), real_broker.delayed_count(None)) == (1, 1)
    assert real_broker.get_job(shared_later.id) == shared_later


def test_a_queues_delayed_set_of_the_wrong_type_does_not_hold_up_the_others(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_client.set(keys.delayed("m2"), "another program's string")
    real_client.zadd(keys.DUE, {"m2": 0})
    job = Job.new({"n": 1})
    real_broker.queue_jobs([job], at=time.time() + 0.2)
    assert real_broker.take(manager=M, worker=W, timeout=5.0) == [job]
    assert real_client.zrange(keys.DUE, 0, -1) == [], "the entry for a set that is no set is dropped"
    assert real_client.get(keys.delayed("m2")) == "another program's string", "and the key is left alone"
