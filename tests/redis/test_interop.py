"""Interoperation with programs that use nothing but a Redis client, on a real Redis.

The other side of each test is plain redis-py speaking the original qw protocol
(``shared/spec/redis-protocol.md``), with no qw code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import redis
from qwtest_redis import BlockedTakes
from qwtest_wait import wait_for
from redis_support import CommandCounter, redis_url, shared_client

from qw_core.models import Job
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions

REDIS_DB = 11
M, W = "m1", "m1.4242"


def hand_written(client: redis.Redis, job_id: str, fields: dict[str, str], queue: str) -> None:
    client.hset(f"job:{job_id}", mapping=fields)
    client.lpush(queue, job_id)


@pytest.mark.parametrize(("queue", "manager"), [("all:jobs", None), ("m1:jobs", "m1")])
def test_a_hand_written_job_is_taken_as_strings_and_leaves_nothing_behind(
    real_broker: RedisBroker, real_client: redis.Redis, queue: str, manager: str | None
) -> None:
    hand_written(real_client, "hand-1", {"n": "7", "to": "someone@example.com"}, queue)
    [job] = real_broker.take(manager=M, worker=W)
    assert job == Job(id="hand-1", data={"n": "7", "to": "someone@example.com"}, manager=manager)
    assert real_client.lrange(f"{W}:jobs", 0, -1) == ["hand-1"]
    assert real_broker.take(manager=M, worker=W, finished=["hand-1"], limit=0) == []
    assert real_client.keys("*") == []


def test_a_hand_written_id_without_a_hash_is_failed_as_invalid_not_run_empty(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_client.lpush("all:jobs", "no-hash")
    assert real_broker.take(manager=M, worker=W) == []
    failed = real_broker.get_failed("no-hash")
    assert failed is not None
    assert failed.failure.kind == "invalid"
    assert "has no data" in failed.failure.message
    assert not real_client.exists(f"{W}:jobs", "all:jobs")


def test_a_job_queued_by_qw_reads_naturally_with_plain_commands(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    job = Job.new({"name": "x", "n": 7, "tags": ["a"]}, manager=M)
    real_broker.queue_job(job)
    assert real_client.lrange("m1:jobs", 0, -1) == [job.id]
    stored = real_client.hgetall(f"job:{job.id}")
    assert stored == {"name": "x", "n": "7", "tags": '["a"]'}, "the data and nothing else"
    assert real_client.type(f"qw:job:{job.id}") == "string", "qw's own part, beside it"


def test_an_original_style_consumer_can_process_a_qw_job(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    job = Job.new({"name": "x", "n": "7"})
    real_broker.queue_job(job)
    # The original worker: RPOPLPUSH, HGETALL, then DEL + LREM.
    job_id = real_client.rpoplpush("all:jobs", "old.1:jobs")
    data = real_client.hgetall(f"job:{job_id}")
    assert (data["name"], data["n"]) == ("x", "7")
    real_client.delete(f"job:{job_id}")
    real_client.lrem("old.1:jobs", 1, job_id)
    # It knows nothing of qw's marker beside the hash: a reaper round sweeps it away.
    assert real_client.exists(f"qw:job:{job_id}")
    real_broker.reap(owner="test", lease=0, ttl=0)
    assert set(real_client.keys("*")) - set(real_client.keys("qw:producer:*")) <= {"qw:wake:all"}


def test_a_job_queued_before_1_0_with_its_marker_in_the_hash_runs_after_the_upgrade(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # As qw 1.0.0.dev0 stored {"n": 7, "tags": ["a"]} for manager m1, retried once.
    marker = '{"v":1,"json":["n","tags"],"keys":["n","tags"],"manager":"m1","attempts":1,"queued_at":5.5}'
    real_client.hset("job:old-1", mapping={"n": "7", "tags": '["a"]', "__qw__": marker})
    real_client.lpush("m1:jobs", "old-1")
    [job] = real_broker.take(manager=M, worker=W)
    assert job == Job(id="old-1", data={"n": 7, "tags": ["a"]}, manager="m1", attempts=1, queued_at=5.5)
    real_broker.retry_job(worker=W, job=job)  # written again: in the new form
    assert real_client.hgetall("job:old-1") == {"n": "7", "tags": '["a"]'}
    [again] = real_broker.take(manager=M, worker=W)
    assert again.data == {"n": 7, "tags": ["a"]}
    assert again.attempts == 2
    real_broker.finish_jobs(worker=W, job_ids=["old-1"])
    assert not real_client.exists("job:old-1", "qw:job:old-1")


def test_the_sweep_leaves_the_markers_of_live_jobs_alone(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    queued = [Job.new({"a": 1}), Job.new([1, 2]), Job.new({})]  # a field, the data field, no hash
    real_broker.queue_jobs(queued)
    delayed = Job.new({"later": True})
    real_broker.queue_jobs([delayed], delay=3600)
    [held] = real_broker.take(manager=M, worker=W)
    real_client.set("qw:job:not-json", "{")  # not ours to judge
    real_broker.reap(owner="test", lease=0, ttl=0)
    for job in [*queued, delayed]:
        assert real_client.exists(f"qw:job:{job.id}"), job.data
    assert real_client.exists("qw:job:not-json")
    assert real_broker.get_job(held.id) == held


Taker = Callable[[float, RedisOptions], "Future[tuple[list[Job], float]]"]


@pytest.fixture
def blocked_taker(redis_db: int, real_client: redis.Redis) -> Iterator[Taker]:
    """Start a take(timeout) on a broker of its own with the given options, and return once
    it is blocked waiting (in ``BLPOP``); the future gives (jobs, when it returned)."""
    pool = ThreadPoolExecutor(1)
    opened: list[RedisBroker] = []
    with BlockedTakes() as blocked:

        def start(timeout: float, options: RedisOptions) -> Future[tuple[list[Job], float]]:
            other = RedisBroker.from_url(redis_url(redis_db), options)
            opened.append(other)

            def take() -> tuple[list[Job], float]:
                jobs = other.take(manager=M, worker=W, timeout=timeout)
                return jobs, time.monotonic()

            future = pool.submit(take)
            wait_for(lambda: blocked.count or future.done(), what="the take to block")
            return future

        yield start
        pool.shutdown()
    for other in opened:
        other.close()


#: Blocking waits long enough that a take nobody woke would return far too late.
LONG_SLICES = RedisOptions(block_slice=10.0, socket_timeout=30.0)


@pytest.mark.serial
def test_a_job_pushed_by_hand_is_taken_at_the_next_blocking_slice(
    real_client: redis.Redis, blocked_taker: Taker
) -> None:
    # Pushed by hand, a job sends no wake-up: the taker sees it when its wait of one slice
    # (half a second by default) ends, and takes it then.
    options = RedisOptions()
    future = blocked_taker(5.0, options)
    pushed_at = time.monotonic()
    hand_written(real_client, "hand-2", {"n": "1"}, "m1:jobs")
    jobs, taken_at = future.result(10)
    assert [job.id for job in jobs] == ["hand-2"]
    assert taken_at - pushed_at < options.block_slice + 0.25


@pytest.mark.parametrize("where", ["manager", "shared", "worker"])
def test_a_job_queued_through_qw_wakes_a_blocked_take(
    real_broker: RedisBroker, blocked_taker: Taker, where: str
) -> None:
    # The taker blocks in 10 s slices: only a wake-up makes it return within seconds.
    # (How soon, about a millisecond, is measured by the benchmark: bench/.)
    future = blocked_taker(30.0, LONG_SLICES)
    job = Job.new(
        {"n": 1}, manager=M if where == "manager" else None, worker=W if where == "worker" else None
    )
    queued_at = time.monotonic()
    real_broker.queue_job(job)
    jobs, taken_at = future.result(40)
    assert [j.id for j in jobs] == [job.id]
    assert taken_at - queued_at < 5.0


def test_stale_wake_tokens_do_not_make_an_idle_worker_spin(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_broker.queue_jobs([Job.new({"n": n}, manager=M) for n in range(100)])
    assert real_client.llen("qw:wake:m1") == 64  # capped
    assert len(real_broker.take(manager=M, worker=W, limit=100)) == 100
    real_client.delete(f"{W}:jobs")
    real_broker._scripts.promote()  # loaded on this server: no SCRIPT LOAD in the count
    # Tokens are left (the batch took them all without popping any); an idle take deletes
    # them on its first look, then blocks instead of waking 64 times.
    counter = CommandCounter(real_broker._client)
    started = time.monotonic()
    assert real_broker.take(manager=M, worker=W, timeout=0.3) == []
    assert time.monotonic() - started >= 0.25, "it waited"
    assert real_client.exists("qw:wake:m1", "qw:wake:all") == 0
    # take.lua; promote.lua (moves due delayed jobs, caps the wait at the next due time);
    # one blocking wait; take.lua again.
    assert counter.names == ["EVALSHA", "EVALSHA", "BLPOP", "EVALSHA"]


def test_a_workers_own_stale_wake_tokens_are_deleted_once_it_took_its_direct_jobs(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_broker.queue_jobs([Job.new({"n": n}, worker=W) for n in range(5)])
    assert real_client.llen(f"qw:wake:{W}") == 5
    assert len(real_broker.take(manager=M, worker=W, limit=10)) == 5
    assert not real_client.exists(f"qw:wake:{W}"), "else an idle take would wake five times for nothing"


# -- unreadable jobs -------------------------------------------------------------------


def test_a_hand_written_hash_over_the_limit_is_failed_as_invalid_without_running(
    real_client: redis.Redis, redis_db: int
) -> None:
    small = RedisBroker(
        shared_client(redis_db),
        RedisOptions(max_job_size=1000),
    )
    hand_written(real_client, "big", {"blob": "x" * 2000}, "m1:jobs")
    hand_written(real_client, "fine", {"n": "1"}, "m1:jobs")
    assert small.take(manager=M, worker=W, limit=2) == [Job(id="fine", data={"n": "1"}, manager=M)]
    [failed] = small.failed_jobs()
    assert failed.job == Job(id="big", data=None, manager=M)
    assert failed.failure.kind == "invalid"
    assert failed.failure.exc_type == "qw_core.errors.JobTooLarge"
    assert "2004 bytes; the limit is 1000" in failed.failure.message
    assert real_client.lrange(f"{W}:jobs", 0, -1) == ["fine"]
    assert real_client.hgetall("qw:invalid:big") == {"blob": "x" * 2000}
    assert not real_client.exists("job:big")
    # Raise the limit and requeue: the untouched hash goes back on its queue.
    roomy = RedisBroker(small._client, RedisOptions(max_job_size=4000))
    assert roomy.requeue_failed("big")
    assert real_client.lrange("m1:jobs", 0, -1) == ["big"]
    [again] = roomy.take(manager=M, worker="m1.2")
    assert again == Job(id="big", data={"blob": "x" * 2000}, manager=M)


def test_an_undecodable_qw_hash_is_failed_as_invalid(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    hand_written(real_client, "future", {"__qw__": '{"v": 99}', "x": "1"}, "all:jobs")
    assert real_broker.take(manager=M, worker=W) == []
    [failed] = real_broker.failed_jobs()
    assert failed.failure.kind == "invalid"
    assert "encoding version 99" in failed.failure.message
    assert real_client.hgetall("qw:invalid:future") == {"__qw__": '{"v": 99}', "x": "1"}
    assert real_broker.held_job_ids(W) == []
