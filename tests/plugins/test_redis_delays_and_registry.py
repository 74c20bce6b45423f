"""The Redis side of delayed jobs and the failed registry, on a real server (database 1).

The mover (``promote.lua``, and the same step inside ``take.lua``) is raced by many
clients at once; an observer takes atomic snapshots meanwhile to check that no job is
ever both delayed and queued, nor neither.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import redis
from plugin_support import REDIS_DB, redis_url, running_worker, shared_client, wait_for
from qwtest_redis import BlockedTakes, PrivateRedis, flushed_db

from qw_core import FailedLimits, Failure, Job, PluginConfig, RetryPolicy
from qw_core.testing import make_jobs, poll_take, take_while_blocked
from qw_redis import keys
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions
from qw_redis.scripts import Scripts

pytestmark = pytest.mark.redis


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    with flushed_db(REDIS_DB) as client:
        yield client


@pytest.fixture
def broker(client: redis.Redis) -> Iterator[RedisBroker]:
    broker = RedisBroker.from_url(redis_url(REDIS_DB))
    yield broker
    broker.close()


def test_delayed_jobs_are_stored_under_the_documented_keys(broker: RedisBroker, client: redis.Redis) -> None:
    mine, shared = Job.new({"n": 1}, manager="m1"), Job.new({"n": 2})
    broker.queue_jobs([mine, shared], delay=60)
    (server_now, _) = client.time()
    mine_due = dict(client.zrange(keys.delayed("m1"), 0, -1, withscores=True))
    shared_due = dict(client.zrange(keys.delayed(None), 0, -1, withscores=True))
    assert list(mine_due) == [mine.id]
    assert list(shared_due) == [shared.id]
    scores = [*mine_due.values(), *shared_due.values()]
    assert all(server_now + 55 < score < server_now + 65 for score in scores)
    assert dict(client.zrange(keys.DUE, 0, -1, withscores=True)) == {
        "m1": mine_due[mine.id],
        keys.SHARED_ORIGIN: shared_due[shared.id],
    }, "each queue's soonest due time"
    assert client.hgetall(keys.ORIGIN) == {}
    assert client.hget(keys.job(mine.id), "n") == "1"
    assert client.llen(keys.ALL_JOBS) == client.llen(keys.queue("m1")) == 0


def test_racing_movers_move_every_job_exactly_once(client: redis.Redis) -> None:
    count, movers = 3000, 8
    broker = RedisBroker(client)
    jobs = make_jobs(count) + make_jobs(count // 3, manager="m1")
    broker.queue_jobs(jobs, delay=0.5)
    everyone = {job.id for job in jobs}
    moved = [0] * movers
    problems: list[str] = []
    start = threading.Barrier(movers + 1)
    done = threading.Event()

    def mover(n: int) -> None:
        own = shared_client(REDIS_DB)
        scripts = Scripts(own)
        start.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got, next_due = scripts.promote(limit=50)
            moved[n] += got
            if next_due is None:
                break
        own.close()

    def observer() -> None:
        own = shared_client(REDIS_DB)
        while not done.is_set():
            pipe = own.pipeline(transaction=True)  # MULTI/EXEC: one consistent snapshot
            pipe.zrange(keys.delayed(None), 0, -1)
            pipe.zrange(keys.delayed("m1"), 0, -1)
            pipe.lrange(keys.ALL_JOBS, 0, -1)
            pipe.lrange(keys.queue("m1"), 0, -1)
            delayed_shared, delayed_mine, shared, mine = pipe.execute()
            delayed = delayed_shared + delayed_mine
            both = set(delayed) & (set(shared) | set(mine))
            if both or Counter(delayed + shared + mine) != Counter(everyone):
                problems.append(f"{len(both)} both delayed and queued; {len(delayed + shared + mine)} seen")
        own.close()

    threads = [threading.Thread(target=mover, args=(n,)) for n in range(movers)]
    watcher = threading.Thread(target=observer)
    for thread in [*threads, watcher]:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join(30)
    done.set()
    watcher.join(30)
    assert problems == []
    assert sum(moved) == len(jobs)
    assert sum(1 for n in moved if n) > 1, "the movers really raced"
    queued = broker.queued_job_ids() + broker.queued_job_ids("m1")
    assert Counter(queued) == Counter(everyone), "every job queued exactly once"
    assert broker.queued_job_ids("m1") == [job.id for job in jobs[count:]], "each on its own queue, in order"
    assert not client.exists(keys.delayed(None), keys.delayed("m1"), keys.DUE)
    assert client.hlen(keys.ORIGIN) == 0


def test_a_blocked_take_wakes_for_a_job_due_before_its_slice_ends(client: redis.Redis) -> None:
    # A taker blocked for a 10 s slice learns of a job due in 1.1 s (queueing it wakes the
    # taker, which then waits only until the due time) and takes it then, not at 10 s.
    broker = RedisBroker.from_url(redis_url(REDIS_DB), RedisOptions(block_slice=10.0, socket_timeout=30.0))
    job = Job.new({"n": 1})
    with BlockedTakes() as blocked:
        taken, waited = take_while_blocked(
            broker, lambda: broker.queue_jobs([job], delay=1.1), blocked=lambda: blocked.count > 0
        )
    broker.close()
    assert taken == [job]
    assert 1.05 <= waited < 5.0


def test_a_job_queued_in_the_last_tick_before_a_due_time_starts_on_time_too() -> None:
    # Redis ends a blocking wait only on its timer's tick (here hz 1: a second), so within a
    # tick of the next due time a taker waits by itself. A job queued meanwhile that is due
    # sooner (or now) must be seen then, not when the first comes due.
    with PrivateRedis(["--hz", "1"]) as server:
        taker, producer = RedisBroker.from_url(server.url()), RedisBroker.from_url(server.url())
        later, sooner = Job.new({"n": 1}), Job.new({"n": 2})
        producer.queue_jobs([later], delay=0.9)
        looked = threading.Event()
        promote = taker._scripts.promote

        def promote_and_tell(**kwargs: Any) -> tuple[int, float | None]:
            result = promote(**kwargs)
            looked.set()
            return result

        taker._scripts.promote = promote_and_tell  # type: ignore[method-assign]
        taken: list[Job] = []
        thread = threading.Thread(target=lambda: taken.extend(taker.take(manager="m", worker="w", timeout=5)))
        thread.start()
        assert looked.wait(5), "the taker learnt the first due time"
        queued_at = time.monotonic()
        producer.queue_jobs([sooner], delay=0.1)
        thread.join(10)
        waited = time.monotonic() - queued_at
        taker.close()
        producer.close()
    assert taken == [sooner]
    assert waited < 0.6, f"taken {waited:.2f} s after it was queued: at the first job's due time"


def test_a_delayed_retry_comes_back_with_its_attempts(broker: RedisBroker) -> None:
    job = Job.new({"n": 1}, manager="m1")
    broker.queue_job(job)
    broker.take(manager="m1", worker="m1.1")
    assert broker.retry_job(worker="m1.1", job=job, delay=0.2)
    assert broker.delayed_job_ids("m1") == [job.id]
    taken, _ = poll_take(broker, manager="m1", worker="m1.2", timeout=5, step=0.1)
    assert [j.attempts for j in taken] == [1]


def _flood(broker: RedisBroker, count: int, limits: FailedLimits) -> list[Job]:
    jobs = make_jobs(count)
    broker.queue_jobs(jobs)
    taken: list[Job] = []
    while len(taken) < count:
        taken += broker.take(manager="m1", worker="m1.1", held=[j.id for j in taken], limit=100)
    for job in taken:
        failure = Failure(exc_type="builtins.ValueError", message="poison")
        assert broker.fail_job(worker="m1.1", job=job, failure=failure, limits=limits)
    return jobs


def test_a_poison_flood_cannot_grow_the_registry_past_its_bound(
    broker: RedisBroker, client: redis.Redis
) -> None:
    jobs = _flood(broker, 1500, FailedLimits(max_count=100, max_age=None))
    assert broker.failed_count() == 100
    assert len(list(client.scan_iter(match="qw:failed:*", count=1000))) == 100, (
        "trimmed entries leave no keys"
    )
    assert [f.job.id for f in broker.failed_jobs(limit=3)] == [j.id for j in reversed(jobs[-3:])]
    others = {
        key for key in client.scan_iter(count=1000) if not key.startswith(("qw:failed:", "qw:producer:"))
    }
    assert others <= {keys.FAILED, keys.WAKE_ALL}, "no job hash or origin entry is left behind"


def test_lowering_the_bound_trims_in_batches(broker: RedisBroker) -> None:
    _flood(broker, 30, FailedLimits(max_count=None, max_age=None))
    _flood(broker, 1, FailedLimits(max_count=5, max_age=None))
    assert broker.failed_count() == 5


def test_purging_everything_deletes_every_key(broker: RedisBroker, client: redis.Redis) -> None:
    _flood(broker, 250, FailedLimits())
    assert broker.purge_failed() == 250
    assert list(client.scan_iter(match="qw:failed*")) == []


@pytest.mark.parametrize(("jitter", "low"), [(0.0, 1.0), (0.5, 0.5)])
def test_a_failed_job_is_retried_after_the_policys_back_off_by_redis_clock(
    broker: RedisBroker, client: redis.Redis, jitter: float, low: float
) -> None:
    # Jobs on their first, second and third run fail: each waits in qw:delayed:all until
    # backoff * 2**(retry - 1) later (capped), shortened by up to the jitter fraction.
    jobs = [attrs.evolve(Job.new({"n": n}), attempts=n) for n in range(3)]
    broker.queue_jobs(jobs)
    policy = RetryPolicy(max_retries=5, backoff=30.0, backoff_max=100.0, jitter=jitter)

    def fail(job_id: str, data: Any) -> None:
        raise ValueError("down")

    with running_worker(broker, fail, PluginConfig(entry_points=False, retry=policy)) as recorder:
        wait_for(lambda: len(recorder.runs) == 3, what="each job to fail once")
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    due = dict(client.zrange(keys.delayed(None), 0, -1, withscores=True))
    for job, backoff in zip(jobs, [30.0, 60.0, 100.0], strict=True):
        wait = due[job.id] - now
        assert low * backoff - 5 < wait <= backoff, (job.attempts, wait)
    assert [attempt for _, attempt, _, _ in recorder.runs] == [1, 2, 3]
