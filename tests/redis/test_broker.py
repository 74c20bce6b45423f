"""RedisBroker behaviour beyond the shared contract, on a real Redis (and fakeredis)."""

from __future__ import annotations

import json
import multiprocessing

import attrs
import pytest
import redis
from redis_support import CommandCounter

from qw_core.errors import BackendError, InvalidName, JobTooLarge
from qw_core.models import Failure, Job
from qw_redis import keys
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions
from qw_redis.scripts import WAKE_CAP

REDIS_DB = 12
M, W, W2 = "m1", "m1.101", "m1.102"


def test_a_job_too_large_is_refused_when_queued_and_nothing_is_written(
    real_client: redis.Redis, redis_db: int
) -> None:
    broker = RedisBroker(real_client, RedisOptions(max_job_size=10_000))
    fine, big = Job.new({"n": 1}), Job.new({"blob": "x" * 10_000})
    with pytest.raises(JobTooLarge, match="the limit is 10000"):
        broker.queue_jobs([fine, big])
    assert real_client.keys("*") == []


def test_the_default_limit_is_512_kib(real_broker: RedisBroker, real_client: redis.Redis) -> None:
    real_broker.queue_job(Job.new({"blob": "x" * 500_000}))
    with pytest.raises(JobTooLarge, match="524288"):
        real_broker.queue_job(Job.new({"blob": "x" * 530_000}))
    assert real_client.llen("all:jobs") == 1


def test_an_invalid_name_is_refused_before_anything_is_written(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    with pytest.raises(InvalidName):
        real_broker.take(manager="bad:name", worker=W)
    with pytest.raises(InvalidName):
        real_broker.register_worker(manager=M, worker="all")
    assert real_client.keys("*") == []


@pytest.mark.parametrize("unique", [False, True])
def test_a_broker_used_on_both_sides_of_a_fork_loses_no_job(
    real_broker: RedisBroker, real_client: redis.Redis, unique: bool
) -> None:
    # A broker made before a fork (a module-level one, in an application server that
    # preloads the application, or imported by a manager that forks its workers) queues
    # in the parent and the child alike: each is a producer of its own, and a call of one
    # is never taken for a call of the other sent again (and its job silently dropped).
    def job(name: str) -> Job:
        return Job(id=name, data=name, meta={"unique": {"key": name}} if unique else {})

    queue = real_broker.queue_jobs_unique if unique else real_broker.queue_jobs
    child = multiprocessing.get_context("fork").Process(target=queue, args=([job("child")],))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    queue([job("parent")])
    assert sorted(real_client.lrange("all:jobs", 0, -1)) == ["child", "parent"]


def test_large_batches_are_queued_in_chunks_per_queue(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    jobs = [Job.new({"n": n}, manager=M if n % 2 else None) for n in range(2500)]
    counter = CommandCounter(real_broker._client)
    real_broker.queue_jobs(jobs)
    assert counter.names == ["EVALSHA"] * 6  # 1250 per queue: 500 + 500 + 250, twice
    assert real_broker.queued_job_ids() == [job.id for job in jobs if not job.manager]
    assert real_broker.queued_job_ids(M) == [job.id for job in jobs if job.manager]
    assert real_client.llen("qw:wake:all") == real_client.llen("qw:wake:m1") == 64


@pytest.mark.parametrize("delay", [0.0, 60.0])
@pytest.mark.parametrize(
    ("data", "calls"),
    [
        ([{f"k{i}": i for i in range(99)}] * 100, 3),  # 100 fields a job (with the marker): 40 a call
        ([{"s": "x" * 100_000}] * 5, 3),  # 256 KiB a call: 2 such jobs
        ([{"s": "x" * 300_000}, {"n": 1}], 2),  # a job over the bound goes alone
    ],
)
def test_a_bulk_queue_is_stored_in_script_calls_of_bounded_size(
    real_broker: RedisBroker, data: list[dict[str, object]], calls: int, delay: float
) -> None:
    # Redis serves nobody else while a script runs: no call may store an unbounded amount.
    jobs = [Job.new(item) for item in data]
    real_broker.queue_jobs([Job.new({"n": 0}, manager="warm")], delay=delay)  # the server has the script
    counter = CommandCounter(real_broker._client)
    real_broker.queue_jobs(jobs, delay=delay)
    assert counter.names == ["EVALSHA"] * calls
    listed = real_broker.delayed_job_ids() if delay else real_broker.queued_job_ids()
    assert listed == [job.id for job in jobs], "all stored, in order"


def test_releasing_more_jobs_than_lua_can_unpack_pushes_at_most_wake_cap_tokens(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # A token per job released would be 10,000 values for one LPUSH: more than Lua can
    # unpack into a call, so the release would fail after moving the jobs.
    ids = [f"j{n}" for n in range(10_000)]
    real_client.rpush(f"{W}:jobs", *ids)  # held, as take.lua leaves them: taken from all:jobs
    real_client.hset(keys.ORIGIN, mapping=dict.fromkeys(ids, ""))
    assert real_broker.release_jobs(worker=W, job_ids=ids) == 10_000
    assert real_client.llen("qw:wake:all") == WAKE_CAP
    assert real_broker.queued_job_ids()[:2] == ids[:2], "back at the front, in take order"
    assert not real_client.exists(f"{W}:jobs", keys.ORIGIN)


def test_take_is_one_round_trip_per_job_finish_included(real_broker: RedisBroker) -> None:
    jobs = [Job.new({"n": n}) for n in range(200)]
    real_broker.queue_jobs(jobs)
    real_broker.take(manager=M, worker=W, limit=0)  # the server may not have the script yet
    counter = CommandCounter(real_broker._client)
    finished: list[str] = []
    taken: list[Job] = []
    while batch := real_broker.take(manager=M, worker=W, finished=finished):
        taken += batch
        finished = [job.id for job in batch]
    assert taken == jobs
    assert counter.names == ["EVALSHA"] * (len(jobs) + 1)  # the last take finds nothing
    assert real_broker.held_job_ids(W) == []


def test_guarded_settling_after_recovery(real_broker: RedisBroker) -> None:
    first, second = Job.new({"n": 1}), Job.new({"n": 2})
    real_broker.queue_jobs([first, second])
    real_broker.take(manager=M, worker=W, limit=2)
    assert real_broker.recover_worker(manager=M, worker=W) == 2
    assert real_broker.take(manager=M, worker=W2, limit=2) == [first, second]
    failure = Failure(exc_type="E", message="late")
    assert not real_broker.fail_job(worker=W, job=first, failure=failure)
    assert not real_broker.retry_job(worker=W, job=first)
    assert real_broker.release_jobs(worker=W, job_ids=[first.id, second.id]) == 0
    assert real_broker.finish_jobs(worker=W, job_ids=[second.id]) == [False]
    assert real_broker.held_job_ids(W2) == [first.id, second.id]
    assert real_broker.failed_jobs() == []
    assert real_broker.finish_jobs(worker=W2, job_ids=[first.id, second.id]) == [True, True]


def test_recovering_20000_jobs_works_in_batches(real_broker: RedisBroker, real_client: redis.Redis) -> None:
    ids = [f"j{n}" for n in range(20_000)]
    for start in range(0, len(ids), 5000):
        real_client.lpush(f"{W}:jobs", *ids[start : start + 5000])  # sent to the worker directly
    real_client.hset(keys.ORIGIN, mapping={"j0": "", "j1": M})  # two of them taken already
    real_client.sadd("m1:workers", W)
    counter = CommandCounter(real_broker._client)
    assert real_broker.recover_worker(manager=M, worker=W) == 20_000
    assert counter.names == ["EVALSHA"] * 20
    assert real_client.lrange("all:jobs", 0, -1) == ["j0"]
    # j1 was taken: first in line again; the others were never taken: oldest first, behind.
    queued = real_broker.queued_job_ids(M)
    assert (len(queued), queued[:3], queued[-1]) == (19_999, ["j1", "j2", "j3"], "j19999")
    assert not real_client.exists(f"{W}:jobs", "m1:workers", keys.ORIGIN)


def test_a_restarted_worker_takes_leftovers_then_direct_jobs_oldest_first(
    real_broker: RedisBroker,
) -> None:
    taken = [Job.new({"n": n}) for n in range(3)]
    real_broker.queue_jobs(taken)
    assert real_broker.take(manager=M, worker=W, limit=3) == taken
    direct = [Job.new({"d": n}, worker=W) for n in range(3)]
    real_broker.queue_jobs(direct)
    # A new run of the worker holds nothing yet: leftovers first, in take order; then
    # the jobs sent to it, oldest first; each batch ends up held, in take order.
    first = real_broker.take(manager=M, worker=W, limit=2)
    rest = real_broker.take(manager=M, worker=W, held=[job.id for job in first], limit=10)
    assert first + rest == taken + direct
    assert real_broker.held_job_ids(W) == [job.id for job in taken + direct]


def test_jobs_sent_to_a_worker_go_back_to_its_manager(real_broker: RedisBroker) -> None:
    job = Job.new({"n": 1}, worker=W)
    real_broker.queue_job(job)
    [taken] = real_broker.take(manager=M, worker=W)
    assert real_broker.release_jobs(worker=W, job_ids=[taken.id]) == 1
    assert real_broker.queued_job_ids(M) == [job.id]
    assert real_broker.take(manager=M, worker=W2) == [job]


def test_a_delayed_retry_returns_to_the_queue_it_came_from(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_client.hset("job:hand", mapping={"n": "7"})
    real_client.lpush("m1:jobs", "hand")
    [job] = real_broker.take(manager=M, worker=W)
    assert real_broker.retry_job(worker=W, job=job, delay=0.2)
    assert real_client.zrange(keys.delayed(M), 0, -1) == [job.id]
    assert real_client.zrange(keys.DUE, 0, -1) == [M]
    assert not real_client.hexists(keys.ORIGIN, job.id), "its queue is the set it waits in"
    assert real_broker.take(manager="m2", worker="m2.1", timeout=0.5) == []
    [again] = real_broker.take(manager=M, worker=W2, timeout=2.0)
    # A hand-written job gets qw's marker once qw rewrites it; its strings stay strings.
    assert again == attrs.evolve(job, attempts=1)
    assert real_client.hget("job:hand", "n") == "7"
    assert not real_client.exists(keys.delayed(M), keys.DUE)


def test_a_failed_job_is_kept_readably(real_broker: RedisBroker, real_client: redis.Redis) -> None:
    job = Job.new({"n": 1}, manager=M)
    real_broker.queue_job(job)
    real_broker.take(manager=M, worker=W)
    failure = Failure(exc_type="builtins.ValueError", message="bad", failed_at=1000.0)
    assert real_broker.fail_job(worker=W, job=job, failure=failure)
    seconds, micros = real_client.time()
    [(failed_id, score)] = real_client.zrange(keys.FAILED, 0, -1, withscores=True)
    assert failed_id == job.id
    assert abs(score - (seconds + micros / 1e6)) < 5, "scored by the server's clock, not the host's"
    entry = real_client.hgetall(keys.failed_job(job.id))
    assert set(entry) == {"job", "failure", "origin"}
    assert entry["origin"] == M
    assert not real_client.exists(keys.job(job.id), f"{W}:jobs", keys.ORIGIN)


def test_failing_a_job_clears_its_crash_count(real_broker: RedisBroker, real_client: redis.Redis) -> None:
    # A count left behind would follow the id: requeued from the registry, the job would be
    # failed as crashed before its worker died max_recoveries times more.
    job = Job.new({"n": 1})
    real_broker.queue_job(job)
    real_broker.take(manager=M, worker=W)
    assert real_broker.recover_worker(manager=M, worker=W, max_recoveries=1) == 1  # its worker died
    assert real_client.hget(keys.RECOVERIES, job.id) == "1"
    [again] = real_broker.take(manager=M, worker=W2)
    assert real_broker.fail_job(worker=W2, job=again, failure=Failure(exc_type="E", message="bad"))
    assert not real_client.exists(keys.RECOVERIES)
    assert real_broker.requeue_failed(job.id)
    real_broker.take(manager=M, worker=W)
    assert real_broker.recover_worker(manager=M, worker=W, max_recoveries=1) == 1, "put back, not poison"
    assert real_broker.failed_jobs() == []


def test_scripts_are_reloaded_after_a_script_flush(fake_broker: RedisBroker) -> None:
    job = Job.new({"n": 1})
    fake_broker.queue_job(job)
    fake_broker._client.script_flush()
    assert fake_broker.take(manager=M, worker=W) == [job]
    fake_broker._client.script_flush()
    other = Job.new({"n": 2})  # one job queued alone goes by EVALSHA straight (Scripts._evalsha)
    fake_broker.queue_job(other)
    assert fake_broker.take(manager=M, worker=W2) == [other]


def test_a_failed_record_with_keys_this_version_does_not_know_is_read(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # The rule every backend shares (qw_core.encoding): a newer qw's extra keys are ignored.
    job = Job.new({"n": 1}, manager=M)
    real_broker.queue_job(job)
    real_broker.take(manager=M, worker=W)
    assert real_broker.fail_job(worker=W, job=job, failure=Failure(exc_type="E", message="bad"))
    entry = real_client.hgetall(keys.failed_job(job.id))
    for field in ("job", "failure"):
        real_client.hset(keys.failed_job(job.id), field, json.dumps({**json.loads(entry[field]), "later": 1}))
    found = real_broker.get_failed(job.id)
    assert found is not None
    assert found.job == attrs.evolve(job, attempts=1)
    assert (found.failure.exc_type, found.failure.message) == ("E", "bad")
    assert [entry.job.id for entry in real_broker.failed_jobs()] == [job.id]


def test_a_workers_manager_is_noted_while_it_is_registered(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # qw:manager-of says where a job sent to the worker goes back if it is settled untaken.
    real_broker.register_worker(manager=M, worker="w-7")
    real_broker.register_worker(manager=M, worker="w-8")
    assert real_client.hgetall(keys.MANAGER_OF) == {"w-7": M, "w-8": M}
    assert real_client.smembers(keys.manager_workers(M)) == {"w-7", "w-8"}, "the original registration too"
    real_broker.deregister_worker(manager=M, worker="w-7")
    assert real_client.hgetall(keys.MANAGER_OF) == {"w-8": M}
    real_broker.register_worker(manager="m2", worker="w-9")
    assert real_broker.recover_worker(manager=M, worker="w-9") == 0  # not its manager's: the note stays
    assert real_client.hget(keys.MANAGER_OF, "w-9") == "m2"
    assert real_broker.recover_worker(manager=M, worker="w-8") == 0
    assert real_client.hgetall(keys.MANAGER_OF) == {"w-9": "m2"}


@pytest.mark.parametrize("how", ["release", "retry", "fail"])
def test_a_manager_of_key_of_the_wrong_type_fails_a_settle_call_before_anything_is_written(
    real_broker: RedisBroker, real_client: redis.Redis, how: str
) -> None:
    job = Job.new({"n": 1}, worker="w-7")
    real_broker.queue_job(job)
    real_client.set(keys.MANAGER_OF, "not a hash")
    failure = Failure(exc_type="E", message="bad")
    settle = {
        "release": lambda: real_broker.release_jobs(worker="w-7", job_ids=[job.id]),
        "retry": lambda: real_broker.retry_job(worker="w-7", job=job),
        "fail": lambda: real_broker.fail_job(worker="w-7", job=job, failure=failure),
    }[how]
    with pytest.raises(BackendError, match="WRONGTYPE"):
        settle()
    assert real_client.lrange("w-7:jobs", 0, -1) == [job.id], "still on the worker's list"
    assert real_broker.get_job(job.id) == job
    assert real_broker.failed_jobs() == []


def test_a_manager_of_key_of_the_wrong_type_is_named_by_status(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # Every worker's registration, and every settle of a job sent straight to a worker,
    # fails while it is so (above): `qw status` must say which key to mend.
    real_client.set(keys.MANAGER_OF, "not a hash")
    assert any(keys.MANAGER_OF in problem for problem in real_broker.problems())


def test_a_worker_deregisters_whole_though_manager_of_has_the_wrong_type(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    # A stopping worker must leave its manager's set and drop its keys even then: its
    # manager-of entry cannot be read, so it is neither rewritten nor an error.
    real_broker.register_worker(manager=M, worker="w-7")
    real_client.set(keys.heartbeat("w-7"), "token")
    real_client.delete(keys.MANAGER_OF)
    real_client.set(keys.MANAGER_OF, "not a hash")
    real_broker.deregister_worker(manager=M, worker="w-7")
    assert real_client.smembers(keys.manager_workers(M)) == set()
    assert not real_client.exists(keys.heartbeat("w-7"))
    assert real_client.get(keys.MANAGER_OF) == "not a hash"
