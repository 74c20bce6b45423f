"""Named queues attacked: their keys of the wrong type, the hand-off among queues a worker
serves in priority order, and where their jobs go back to."""

from __future__ import annotations

import pytest
import redis

from qw_core.models import Job
from qw_redis.broker import RedisBroker

REDIS_DB = 6
M, W = "m1", "m1.1"


@pytest.mark.parametrize("key", ["qw:queue:emails", "qw:delayed:queue:emails"])
def test_a_named_queue_key_of_the_wrong_type_is_named_by_status(
    real_broker: RedisBroker, real_client: redis.Redis, key: str
) -> None:
    # delivery.md: a queue key another program made something other than a list is
    # skipped, logged, "and named by `qw status`" (problems()); so must a named queue's be.
    real_broker.queue_jobs([Job.new({"n": 1}, queue="emails")])
    real_client.delete(key)
    real_client.set(key, "another program's string")
    assert any(key in problem for problem in real_broker.problems())


def test_a_job_pushed_by_hand_onto_an_earlier_queue_is_not_passed_over_by_a_hand_off(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # The worker waits (its take found nothing). A program speaking the original protocol
    # pushes a job onto the manager's queue by hand (no wake-up token: seen at the next
    # slice); then a job is queued to the shared queue, which comes after the manager's.
    assert real_broker._take_once(M, W, (), (), 1, waits=True) == []
    real_client.hset("job:by-hand", "n", "1")
    real_client.lpush(f"{M}:jobs", "by-hand")
    real_broker.queue_jobs([Job.new({"n": 2})])
    [taken] = real_broker.take(manager=M, worker=W)
    assert taken.id == "by-hand", "a job on an earlier queue is always taken before one on a later queue"


def test_a_job_back_on_an_earlier_named_queue_is_not_passed_over_by_a_hand_off(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    served = ["high", "low"]
    urgent = Job.new({"n": 1}, queue="high")
    real_broker.queue_jobs([urgent])
    [held] = real_broker.take(manager=M, worker="m1.2", queues=served)
    # W waits: everything it serves is empty (the urgent job is held by m1.2).
    assert real_broker._take_once(M, W, (), (), 1, waits=True, served=["queue:high", "queue:low"]) == []
    # m1.2 is recovered (or releases or retries the job): back on high, with a wake-up
    # token that W's wait has not acted on yet; then a job is queued to low.
    assert real_broker.recover_worker(manager=M, worker="m1.2") == 1
    real_broker.queue_jobs([Job.new({"n": 2}, queue="low")])
    [taken] = real_broker.take(manager=M, worker=W, queues=served)
    assert taken == held, "a job on an earlier queue is always taken before one on a later queue"


@pytest.mark.parametrize("name", ["urgent!", "wow!!"])
def test_a_queue_name_ending_in_an_exclamation_mark_does_not_make_its_jobs_suspects(
    real_broker: RedisBroker, real_client: redis.Redis, name: str
) -> None:
    # take.lua marked a suspect by appending '!' to the source it hands a job out with, and
    # a named queue's source is its origin, queue:<name>; '!' is allowed in a name.
    job = Job.new({"n": 1}, queue=name)
    real_broker.queue_jobs([job])
    real_client.sadd("qw:suspects", "another job")  # so that take.lua looks for suspects
    [taken] = real_broker.take(manager=M, worker=W, queues=[name])
    assert (taken.id, taken.queue, taken.suspect) == (job.id, name, False)
    # A hash without qw's marker takes its queue from where it was taken.
    real_client.hset("job:by-hand", "n", "2")
    real_client.lpush(f"qw:queue:{name}", "by-hand")
    [by_hand] = real_broker.take(manager=M, worker=W, held=[job.id], queues=[name])
    assert (by_hand.id, by_hand.queue, by_hand.suspect) == ("by-hand", name, False)


def test_a_job_sent_to_a_waiting_worker_directly_is_not_passed_over_by_a_hand_off(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # A worker takes the jobs sent to it directly first. One is sent while it waits (a
    # wake-up token it has not acted on yet), then a job is queued to the shared queue.
    assert real_broker._take_once(M, W, (), (), 1, waits=True) == []
    direct = Job.new({"n": 1}, worker=W)
    real_broker.queue_jobs([direct])
    real_broker.queue_jobs([Job.new({"n": 2})])
    [taken] = real_broker.take(manager=M, worker=W)
    assert taken.id == direct.id, "jobs sent to a worker directly come first"
