"""Hand-off: a job queued while a worker waits goes straight to that worker.

``queue.lua`` takes the job on the waiting worker's behalf (onto the tail of its list,
with an origin entry, as ``take.lua`` would) and puts the job's data on the worker's
``qw:handoff:<w>``, which its blocking wait includes: the worker starts the job on the
reply of the wait, without a second round trip. What these tests pin down is that this
never loses a job, never runs one twice, and never passes over a job queued earlier.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from qwtest_wait import wait_for
from redis_support import CommandCounter, redis_url

from qw_core.models import Job
from qw_redis import keys
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions
from qw_redis.scripts import handed_off

REDIS_DB = 15
M, W, W2 = "m1", "m1.1", "m1.2"


@pytest.fixture
def waiter(real_client: redis.Redis, redis_db: int) -> Iterator[RedisBroker]:
    """The waiting worker's own broker (its blocking wait holds a connection)."""
    broker = RedisBroker.from_url(redis_url(redis_db))
    yield broker
    broker.close()


class Waiting:
    """A take that waits, in a thread, for a worker ``worker`` of manager ``manager``."""

    def __init__(
        self, broker: RedisBroker, client: redis.Redis, *, manager: str = M, worker: str = W
    ) -> None:
        self.result: list[Job] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._take, args=(broker, manager, worker), daemon=True)
        self._thread.start()
        wait_for(lambda: client.exists(keys.idling(worker)), what=f"{worker} to wait for jobs")

    def _take(self, broker: RedisBroker, manager: str, worker: str) -> None:
        try:
            self.result = broker.take(manager=manager, worker=worker, timeout=10)
        except BaseException as exc:
            self.error = exc

    def jobs(self) -> list[Job]:
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "the waiting take did not return"
        assert self.error is None
        assert self.result is not None
        return self.result


def test_a_job_queued_to_a_waiting_worker_arrives_on_the_reply_of_its_wait(
    real_broker: RedisBroker, real_client: redis.Redis, waiter: RedisBroker
) -> None:
    waiter.take(manager=M, worker=W, limit=0)  # the scripts are loaded: the count below is the wait's
    waiter._scripts.promote()
    counter = CommandCounter(waiter._client)
    waiting = Waiting(waiter, real_client)
    job = Job.new({"greeting": "héllo ✓", "n": [1, 2]})
    real_broker.queue_jobs([job])
    assert waiting.jobs() == [job]
    # One take that found nothing (and registered the worker), a promote, then the wait:
    # the job came with the wait's reply, not from a take after it.
    assert counter.names == ["EVALSHA", "EVALSHA", "BLPOP"]
    assert real_broker.held_job_ids(W) == [job.id]
    assert real_client.hget(keys.ORIGIN, job.id) == ""
    assert not real_client.exists(keys.idling(W), keys.handoff(W), "all:jobs", "qw:wake:all")
    assert real_broker.finish_jobs(worker=W, job_ids=[job.id]) == [True]
    assert not real_client.exists(f"job:{job.id}", f"qw:job:{job.id}")


def test_a_job_for_a_manager_goes_only_to_a_worker_of_that_manager(
    real_broker: RedisBroker, real_client: redis.Redis, waiter: RedisBroker, redis_db: int
) -> None:
    other = RedisBroker.from_url(redis_url(redis_db))
    try:
        elsewhere = Waiting(other, real_client, manager="m2", worker="m2.1")
        mine = Waiting(waiter, real_client)
        job = Job.new({"n": 1}, manager=M)
        real_broker.queue_jobs([job])
        assert mine.jobs() == [job]
        assert real_client.exists(keys.idling("m2.1"))  # still waiting: it was not handed the job
        assert real_client.hget(keys.ORIGIN, job.id) == M
        real_broker.queue_jobs([Job.new({"n": 2}, manager="m2")])
        assert [j.data for j in elsewhere.jobs()] == [{"n": 2}]
    finally:
        other.close()


def test_a_job_on_a_named_queue_is_handed_to_a_worker_that_serves_it(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    assert real_broker._take_once(M, W, (), (), 1, waits=True, served=["queue:emails"]) == []
    assert real_broker._take_once(M, W2, (), (), 1, waits=True) == []  # the shared queue only
    job = Job.new({"n": 1}, queue="emails")
    real_broker.queue_jobs([job])
    assert real_broker.held_job_ids(W) == [job.id]
    assert real_client.hget(keys.ORIGIN, job.id) == "queue:emails"
    assert real_client.exists(keys.idling(W2))  # still waiting
    [taken] = real_broker.take(manager=M, worker=W, queues=["emails"])  # as a leftover, here
    assert (taken, taken.queue) == (job, "emails")


def test_a_hand_off_nobody_read_is_taken_once_by_the_next_take(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # The worker registers, then its wait's reply is lost (or it never waited).
    assert real_broker._take_once(M, W, (), (), 1, waits=True) == []
    job = Job.new({"n": 1})
    real_broker.queue_jobs([job])
    assert real_client.llen(keys.handoff(W)) == 1
    assert real_broker.take(manager=M, worker=W) == [job]  # a leftover on its list
    assert not real_client.exists(keys.handoff(W))  # so no later wait runs it again
    assert real_broker.take(manager=M, worker=W, held=[job.id], timeout=0.05) == []
    assert real_broker.held_job_ids(W) == [job.id]


def test_a_worker_is_handed_one_job_per_wait(real_broker: RedisBroker, real_client: redis.Redis) -> None:
    assert real_broker._take_once(M, W, (), (), 1, waits=True) == []  # in qw:idle:all and :m1
    first = Job.new({"n": 1})
    real_broker.queue_jobs([first])
    second = Job.new({"n": 2}, manager=M)  # W is still listed for its manager's queue
    real_broker.queue_jobs([second])
    assert real_broker.held_job_ids(W) == [first.id]
    assert real_broker.queued_job_ids(M) == [second.id]


def test_a_take_never_returns_with_the_worker_still_registered(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    assert real_broker.take(manager=M, worker=W, timeout=0.05) == []
    assert not real_client.exists(keys.idling(W))
    job = Job.new({"n": 1})
    real_broker.queue_jobs([job])  # so this goes on the queue, for whichever worker takes next
    assert real_client.lrange("all:jobs", 0, -1) == [job.id]
    assert real_broker.held_job_ids(W) == []


def test_a_job_queued_earlier_is_never_passed_over(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    assert real_broker._take_once(M, W, (), (), 1, waits=True) == []
    real_client.lpush("all:jobs", "by-hand")  # pushed without a wake-up token, not taken yet
    job = Job.new({"n": 1})
    real_broker.queue_jobs([job])
    assert real_client.lrange("all:jobs", 0, -1) == [job.id, "by-hand"]  # in line behind it
    assert not real_client.exists(keys.handoff(W))


def test_a_batch_goes_to_waiting_workers_first_in_queue_order_the_rest_on_the_queue(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    for worker in (W, W2):
        assert real_broker._take_once(M, worker, (), (), 1, waits=True) == []
    jobs = [Job.new({"n": n}) for n in range(5)]
    real_broker.queue_jobs(jobs)
    handed = sorted(real_broker.held_job_ids(W) + real_broker.held_job_ids(W2))
    assert handed == sorted(job.id for job in jobs[:2])
    assert real_broker.queued_job_ids() == [job.id for job in jobs[2:]]
    assert real_client.llen("qw:wake:all") == 3  # one token per job left on the queue


def test_a_job_larger_than_the_waiting_worker_takes_is_queued_with_those_after_it(
    real_client: redis.Redis, redis_db: int
) -> None:
    small = RedisBroker.from_url(redis_url(redis_db), RedisOptions(max_job_size=300))
    roomy = RedisBroker.from_url(redis_url(redis_db))
    try:
        assert small._take_once(M, W, (), (), 1, waits=True) == []
        large, after = Job.new({"text": "x" * 1000}), Job.new({"n": 1})
        roomy.queue_jobs([large, after])
        assert roomy.queued_job_ids() == [large.id, after.id]
        assert real_client.sismember(keys.idle(None), W)  # put back: it still waits
        assert small.held_job_ids(W) == []
    finally:
        small.close()
        roomy.close()


def test_jobs_sent_to_a_worker_directly_are_not_handed_off(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    assert real_broker._take_once(M, W, (), (), 1, waits=True) == []
    job = Job.new({"n": 1}, worker=W)
    real_broker.queue_jobs([job])
    assert not real_client.exists(keys.handoff(W))
    assert real_client.exists(keys.idling(W))
    assert real_broker.take(manager=M, worker=W) == [job]


def test_a_stale_registration_is_dropped_and_the_job_queued(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_client.sadd(keys.idle(None), "m1.9")  # listed, but its qw:idling:<w> is gone (it died)
    job = Job.new({"n": 1})
    real_broker.queue_jobs([job])
    assert real_broker.queued_job_ids() == [job.id]
    assert not real_client.exists(keys.idle(None), "m1.9:jobs", keys.handoff("m1.9"))


def test_recovering_a_worker_ends_its_registration(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_broker.register_worker(manager=M, worker=W)
    assert real_broker._take_once(M, W, (), (), 1, waits=True) == []
    real_broker.recover_worker(manager=M, worker=W)  # it died waiting
    job = Job.new({"n": 1})
    real_broker.queue_jobs([job])
    assert real_broker.queued_job_ids() == [job.id]
    assert real_broker.held_job_ids(W) == []


def test_a_job_handed_to_a_worker_that_died_is_recovered(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_broker.register_worker(manager=M, worker=W)
    assert real_broker._take_once(M, W, (), (), 1, waits=True) == []
    job = Job.new({"n": 1})
    real_broker.queue_jobs([job])  # handed to W, which dies before it reads it
    assert real_broker.held_job_ids(W) == [job.id]
    assert real_broker.recover_worker(manager=M, worker=W) == 1
    assert not real_client.exists(keys.handoff(W), keys.idling(W))
    assert real_broker.take(manager=M, worker=W2) == [job]


@pytest.mark.parametrize("key", ["{w}:jobs", "qw:handoff:{w}", "qw:idling:{w}"])
def test_a_waiting_worker_whose_keys_have_the_wrong_type_is_skipped(
    real_broker: RedisBroker, real_client: redis.Redis, key: str
) -> None:
    assert real_broker._take_once(M, W, (), (), 1, waits=True) == []
    real_client.delete(key.format(w=W))
    real_client.hset(key.format(w=W), "some", "hash")
    job = Job.new({"n": 1})
    real_broker.queue_jobs([job])
    assert real_broker.queued_job_ids() == [job.id]
    assert real_broker.take(manager=M, worker=W2) == [job]


def test_an_unreadable_hand_off_leaves_the_job_to_the_next_take(
    real_client: redis.Redis, waiter: RedisBroker, caplog: pytest.LogCaptureFixture
) -> None:
    job = Job.new({"n": 1})
    waiting = Waiting(waiter, real_client)
    # What queue.lua does, with an entry cut short: the job on the list, its data mangled.
    pipe = real_client.pipeline(transaction=True)
    pipe.delete(keys.idling(W))
    pipe.rpush(f"{W}:jobs", job.id)
    pipe.hset(keys.ORIGIN, job.id, "")
    pipe.hset(f"job:{job.id}", "n", "1")
    pipe.lpush(keys.handoff(W), f"{len(job.id)}:{job.id}1:a9:x")
    pipe.execute()
    # The wait ends on the entry; the take after it hands the job out as a leftover.
    assert [(j.id, j.data) for j in waiting.jobs()] == [(job.id, {"n": "1"})]  # a hash written by hand
    assert "could not be read" in caplog.text
    assert not real_client.exists(keys.handoff(W))


@pytest.mark.parametrize(
    "entry",
    ["", "3:abc", "3:abc1:a", "3:abc1:a0:1:k", "9:abc1:a0:", "x:abc", "3:abc1:a0", "-1:a", "3:ab\u00e91:a0:"],
)
def test_a_malformed_hand_off_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="a hand-off entry"):
        handed_off(entry)


def test_a_hand_off_entry_is_binary_safe() -> None:
    odd = "caf\udce9"  # a byte that was not UTF-8, as the client decodes it
    text = "é✓"
    raw = [b"id1", b"a", b"{}", odd.encode("utf-8", "surrogateescape"), text.encode()]
    entry = b"".join(str(len(part)).encode() + b":" + part for part in raw).decode("utf-8", "surrogateescape")
    taken = handed_off(entry)
    assert (taken.id, taken.source, taken.marker, taken.fields) == ("id1", "a", "{}", {odd: text})


def test_a_hand_off_whose_reply_a_proxy_loses_runs_once(
    real_broker: RedisBroker, real_client: redis.Redis, redis_db: int
) -> None:
    # A guard (this held when written): the BLPOP pops the hand-off, its reply is lost
    # with the connection, and redis-py sends the BLPOP again on a new one. The job is a
    # leftover on the worker's list: handed out once, by the take after the wait.
    from qwtest_proxy import ReplyLosingProxy
    from redis_support import shared_port

    with ReplyLosingProxy(shared_port()) as proxy:
        options = RedisOptions(backoff_cap=0.05, socket_timeout=60.0)
        waiter = RedisBroker.from_url(f"redis://127.0.0.1:{proxy.port}/{redis_db}", options)
        try:
            waiter.take(manager=M, worker=W, limit=0)  # scripts loaded, connection made
            proxy.lose_next(b"BLPOP")
            outcome: list[object] = []

            def wait() -> None:
                try:
                    outcome.append(waiter.take(manager=M, worker=W, timeout=3))
                except Exception as exc:  # redis-py gave up: the worker takes again
                    outcome.append(exc)

            thread = threading.Thread(target=wait, daemon=True)
            thread.start()
            assert proxy.request_forwarded.wait(10)
            wait_for(lambda: real_client.exists(keys.idling(W)), what="the worker to wait")
            job = Job.new({"n": 1})
            real_broker.queue_jobs([job])
            wait_for(lambda: not real_client.exists(keys.handoff(W)), what="the BLPOP to pop the hand-off")
            proxy.cut.set()
            thread.join(15)
            assert not thread.is_alive()
            [result] = outcome
            taken = result if isinstance(result, list) else waiter.take(manager=M, worker=W, timeout=1)
            assert taken == [job]
            assert waiter.take(manager=M, worker=W, held=[job.id], timeout=0.3) == []
            assert real_broker.held_job_ids(W) == [job.id]
        finally:
            waiter.close()


def test_a_nudge_and_a_hand_off_that_arrive_together_hand_the_job_out_once(
    real_broker: RedisBroker, real_client: redis.Redis, waiter: RedisBroker
) -> None:
    # A guard (this held when written). A worker with a job in flight waits; before its
    # BLPOP starts, a job is handed to it and its job in flight completes (a nudge). The
    # BLPOP answers the nudge (the first key), so the hand-off is unread: the take that
    # follows the nudge hands the job out as a leftover, and it never comes again.
    real_broker.queue_jobs([Job.new({"n": 0})])
    [running] = waiter.take(manager=M, worker=W)
    job = Job.new({"n": 1})
    promote = waiter._scripts.promote

    def promote_then_race() -> tuple[int, float | None]:  # runs between the take and the BLPOP
        if not real_client.exists(keys.handoff(W)):
            real_broker.queue_jobs([job])
            real_broker.nudge(W)
        return promote()

    waiter._scripts.promote = promote_then_race  # type: ignore[method-assign]
    taken = waiter.take(manager=M, worker=W, held=[running.id], limit=2, timeout=5)
    assert taken == [job]
    assert not real_client.exists(keys.handoff(W))
    assert real_broker.held_job_ids(W) == [running.id, job.id]
    waiter._scripts.promote = promote  # type: ignore[method-assign]
    assert waiter.take(manager=M, worker=W, held=[running.id, job.id], limit=2, timeout=0.3) == []


def test_workers_that_are_gone_do_not_pile_up_in_the_idle_sets(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # Each worker that ever waited is added to qw:idle:all, qw:idle:<m> and its named
    # queues' idle sets; only queue.lua removes a member (when it pops one whose
    # registration is gone). A queue that gets no job (most managers' own queues: jobs go
    # to the shared queue) keeps every name: a set that grows by one per worker start,
    # for ever (a crash-looping worker, or --max-jobs restarts, adds thousands).
    for pid in range(50):
        worker = f"{M}.{pid}"
        assert real_broker._take_once(M, worker, (), (), 1, waits=True, served=["queue:rare"]) == []
        real_broker.recover_worker(manager=M, worker=worker)
    assert real_client.scard(keys.idle(M)) == 0
    assert real_client.scard(keys.idle("queue:rare")) == 0


def test_workers_gone_without_a_recovery_are_swept_out_of_the_idle_sets(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # A worker recovered after its registration expired leaves no trace of the named
    # queues it served: the next registrations sweep it out.
    for pid in range(50):
        worker = f"{M}.{pid}"
        assert real_broker._take_once(M, worker, (), (), 1, waits=True, served=["queue:rare"]) == []
        real_client.delete(keys.idling(worker))  # it expired: the worker died long ago
    assert real_client.smembers(keys.idle("queue:rare")) == {f"{M}.49"}
    assert real_client.smembers(keys.idle(M)) == {f"{M}.49"}
