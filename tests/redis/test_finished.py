"""Jobs that returned nothing are remembered as finished (``qw:finished``) on a real Redis:
within a cap however fast they finish, never at the cost of a finish, and through a
real worker with its ``result_ttl``."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from qw_core.models import Job, State
from qw_core.results import FINISHED_CAP
from qw_core.testing import MANAGER, WORKER, run_jobs
from qw_redis import keys
from qw_redis.broker import RedisBroker

REDIS_DB = 4


def _finish_one(broker: RedisBroker, *, keep: float = 600) -> str:
    job = Job.new({"n": 1})
    broker.queue_job(job)
    [taken] = broker.take(manager=MANAGER, worker=WORKER)
    assert broker.finish_jobs(worker=WORKER, job_ids=[taken.id], keep_finished=keep) == [True]
    return taken.id


def _until(done: Callable[[], bool], what: str, *, calls: Callable[[], object], within: float = 20) -> None:
    """Call ``calls()`` until ``done()``: trimming happens on some finishes, not all."""
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, f"{what} within {within} s"
        calls()


def test_the_finished_jobs_remembered_are_trimmed_to_the_newest_cap(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    now = time.time()
    pipe = real_client.pipeline(transaction=False)
    for start in range(0, FINISHED_CAP, 10_000):
        pipe.zadd(
            keys.FINISHED, {f"old-{n:06d}": now - 60 + n / FINISHED_CAP for n in range(start, start + 10_000)}
        )
    pipe.execute()
    newest: list[str] = []
    _until(
        lambda: real_client.zscore(keys.FINISHED, "old-000000") is None,
        "the oldest entries beyond the cap were not trimmed",
        calls=lambda: newest.append(_finish_one(real_broker)),
    )
    # At most one trim's worth over the cap (a few batches between trims) and never below it.
    assert FINISHED_CAP <= real_client.zcard(keys.FINISHED) <= FINISHED_CAP + 64
    assert all(real_broker.job_status(job_id).state is State.SUCCEEDED for job_id in newest)


def test_a_finished_set_of_the_wrong_type_costs_the_note_not_the_finish(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    real_client.set(keys.FINISHED, "another program's string")
    job_id = _finish_one(real_broker)
    assert real_broker.get_job(job_id) is None  # finished all the same
    assert real_broker.job_status(job_id).state is State.UNKNOWN
    assert real_broker.job_ids_with_prefix(job_id[:8]) == []
    assert real_client.get(keys.FINISHED) == "another program's string"  # left as it was


def test_a_worker_remembers_for_its_result_ttl_and_not_at_all_with_none(
    real_broker: RedisBroker, real_client: redis.Redis
) -> None:
    remembered, forgotten = Job.new({"n": 1}), Job.new({"n": 2})
    real_broker.queue_job(remembered)
    run_jobs(real_broker, target=lambda job_id, data: None)
    real_broker.queue_job(forgotten)
    run_jobs(real_broker, target=lambda job_id, data: None, result_ttl=0)
    assert real_broker.job_status(remembered.id).state is State.SUCCEEDED
    assert real_broker.job_status(forgotten.id).state is State.UNKNOWN
    score = real_client.zscore(keys.FINISHED, remembered.id)
    assert score is not None
    assert abs(score - time.time()) < 60
