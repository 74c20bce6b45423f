"""Unique jobs on Redis: the keys they leave (none), races on one key, stale and broken keys.

The behaviour every backend owes is in the contract (``qw_core.testing.contract.unique``);
this is what only Redis shows: ``qw:unique:<key>`` and ``qw:uniques`` are gone once the
job ends, a job without a key is stored exactly as before, the check and the queueing
are one step whatever producers race, and a key pointing at a job that vanished is free.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest
import redis
from redis_support import redis_url

from qw_core.errors import BackendError
from qw_core.models import Failure, Job
from qw_core.unique import Queued, Unique
from qw_redis import codec
from qw_redis.broker import RedisBroker

REDIS_DB = 4
KEY = "report:2026-01"
M, W = "m1", "m1.101"

pytestmark = pytest.mark.redis


@pytest.fixture
def broker(real_client: redis.Redis, redis_db: int) -> Iterator[RedisBroker]:
    opened = RedisBroker.from_url(redis_url(redis_db))
    yield opened
    opened.close()


def unique_keys(client: redis.Redis) -> list[str]:
    return sorted(str(k) for k in client.scan_iter("qw:unique*"))


def test_a_job_without_a_key_is_stored_as_before_and_touches_no_unique_key(
    broker: RedisBroker, real_client: redis.Redis
) -> None:
    job = Job.new({"n": 7, "name": "x"})
    broker.queue_job(job)
    assert real_client.hgetall(f"job:{job.id}") == {"n": "7", "name": "x"}
    assert real_client.get(f"qw:job:{job.id}") == codec.encode_job(job).marker
    assert "unique" not in str(real_client.get(f"qw:job:{job.id}"))
    broker.take(manager=M, worker=W)
    broker.finish_jobs(worker=W, job_ids=[job.id])
    assert unique_keys(real_client) == []


@pytest.mark.parametrize("end", ["take", "finish", "result", "fail"])
def test_the_end_of_a_job_deletes_its_key(broker: RedisBroker, real_client: redis.Redis, end: str) -> None:
    job = Job.new({"n": 1})
    broker.queue_job(job, unique=KEY)
    assert real_client.get(f"qw:unique:{KEY}") == f"e:{job.id}"
    assert real_client.hgetall("qw:uniques") == {job.id: KEY}
    [taken] = broker.take(manager=M, worker=W)
    if end == "take":
        broker.take(manager=M, worker=W, finished=[job.id], limit=0)
    elif end == "finish":
        broker.finish_jobs(worker=W, job_ids=[job.id])
    elif end == "result":
        broker.finish_with_result(worker=W, job_id=job.id, result="1", ttl=5)
    else:
        broker.fail_job(worker=W, job=taken, failure=Failure(exc_type="E", message="m"))
    assert unique_keys(real_client) == []


def test_a_throttle_key_expires_by_itself_and_is_not_indexed(
    broker: RedisBroker, real_client: redis.Redis
) -> None:
    job = Job.new({})
    broker.queue_job(job, unique=Unique(KEY, ttl=30))
    assert real_client.get(f"qw:unique:{KEY}") == f"t:{job.id}"
    assert 0 < real_client.pttl(f"qw:unique:{KEY}") <= 30_000
    assert not real_client.exists("qw:uniques")
    broker.take(manager=M, worker=W)
    broker.finish_jobs(worker=W, job_ids=[job.id])
    assert real_client.get(f"qw:unique:{KEY}") == f"t:{job.id}", "held for its TTL, whatever the job did"


def test_a_key_whose_job_vanished_is_free(broker: RedisBroker, real_client: redis.Redis) -> None:
    real_client.set(f"qw:unique:{KEY}", "e:a-job-long-gone")
    real_client.hset("qw:uniques", "a-job-long-gone", KEY)
    job = Job.new({})
    assert broker.queue_job_unique(job, KEY) == Queued(job.id, True)
    assert real_client.hgetall("qw:uniques") == {job.id: KEY}, "the stale entry went with its key"
    real_client.delete(f"job:{job.id}", f"qw:job:{job.id}")  # deleted by hand
    other = Job.new({})
    assert broker.queue_job_unique(other, KEY) == Queued(other.id, True)


def test_a_key_of_the_wrong_type_fails_the_call_and_writes_nothing(
    broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_client.hset(f"qw:unique:{KEY}", "a", "b")
    job = Job.new({})
    with pytest.raises(BackendError, match="WRONGTYPE"):
        broker.queue_job(job, unique=KEY)
    assert not real_client.exists(f"job:{job.id}", f"qw:job:{job.id}")
    assert broker.queued_job_ids() == []


def test_a_call_sent_again_after_a_lost_reply_answers_as_the_first_did(broker: RedisBroker) -> None:
    keyed = [keyed_job({"n": 1}), keyed_job({"n": 2})]
    scripts = broker._scripts
    scripts._local.calls = itertools.count(7)
    done = broker.queue_jobs_unique(keyed)
    assert done == [Queued(keyed[0].id, True), Queued(keyed[0].id, False)]
    broker.take(manager=M, worker=W)
    broker.finish_jobs(worker=W, job_ids=[keyed[0].id])
    scripts._local.calls = itertools.count(7)  # the same call number: the client sends it again
    assert broker.queue_jobs_unique(keyed) == done, "answered as the first time"
    assert broker.queued_job_ids() == [], "nothing queued twice"


def keyed_job(data: dict[str, int]) -> Job:
    """A job with unique key ``KEY`` in its meta."""
    return Job.new(data, meta={"unique": {"key": KEY}})


@pytest.mark.parametrize("delay", [0.0, 60.0])
def test_many_producers_racing_on_one_key_queue_one_job(
    real_client: redis.Redis, redis_db: int, delay: float
) -> None:
    producers, rounds = 12, 20
    barrier = threading.Barrier(producers)
    answers: list[list[Queued]] = [[] for _ in range(producers)]
    errors: list[BaseException] = []

    def produce(n: int) -> None:
        broker = RedisBroker.from_url(redis_url(redis_db))
        try:
            for r in range(rounds):
                barrier.wait(timeout=30)
                job = Job.new({"producer": n, "round": r})
                answers[n].append(broker.queue_job_unique(job, f"{KEY}:{r}", delay=delay))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            broker.close()

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    stored = RedisBroker.from_url(redis_url(redis_db))
    try:
        waiting = stored.delayed_job_ids() if delay else stored.queued_job_ids()
        assert len(waiting) == rounds, "exactly one job per key"
        for r in range(rounds):
            this_round = [answers[n][r] for n in range(producers)]
            created = [q for q in this_round if q.created]
            assert len(created) == 1, f"round {r}: {len(created)} producers queued a job"
            assert {q.id for q in this_round} == {created[0].id}, "every producer got its id"
            assert created[0].id in waiting
    finally:
        stored.close()


def test_a_requeue_whose_wake_list_is_not_a_list_requeues_the_job_and_says_so(
    broker: RedisBroker, real_client: redis.Redis
) -> None:
    """The wake list is written last, after the job went back: a write that fails there
    would report an error for a job that was requeued (with its key taken), and a call
    sent again would then say it was not. A wake list of the wrong type gets no token, as
    in the batch requeue."""
    job = Job.new({"n": 1})
    broker.queue_job(job, unique=KEY)
    [taken] = broker.take(manager=M, worker=W)
    broker.fail_job(worker=W, job=taken, failure=Failure(exc_type="E", message="m"))
    real_client.set("qw:wake:all", "another program's")
    assert broker.requeue_failed(job.id)
    assert broker.queued_job_ids() == [job.id]
    assert broker.failed_count() == 0
    assert real_client.get(f"qw:unique:{KEY}") == f"e:{job.id}", "it took its key again"
    assert real_client.get("qw:wake:all") == "another program's"
