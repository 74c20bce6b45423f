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
