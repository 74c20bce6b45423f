"""A worker whose wait for jobs fails (its connection reset mid-BLPOP, redis-py's retry
spent) stays registered as waiting for a few seconds, so a job queued then is handed to it:
the job is on ``<w>:jobs``, and the worker does not know. If the worker then stops (asked
to, or its manager is gone), it must not deregister with that job on its list: nobody
would ever put it back (the reaper looks only at registered workers, and a manager that
is gone recovers nothing)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from reliability_support import assert_each_job_in_one_place

from qw_core import PluginConfig, make_plugin_manager
from qw_core.models import Job
from qw_core.worker import Worker
from qw_redis import RedisBroker, keys

pytestmark = [pytest.mark.redis]


def test_a_job_handed_off_while_the_wait_failed_is_not_stranded_when_the_worker_stops(
    url: str, client: redis.Redis
) -> None:
    ran: list[Any] = []
    hook = make_plugin_manager(PluginConfig(entry_points=False)).hook
    broker = RedisBroker.from_url(url)
    producer = RedisBroker.from_url(url)
    job = Job.new({"n": 1})
    worker = Worker(broker, lambda job_id, data: ran.append(data), manager="hs", name="hs.1", hook=hook)
    blpop = broker._client.blpop

    def failing_wait(*args: Any, **kwargs: Any) -> Any:
        if worker.stopping:
            return blpop(*args, **kwargs)
        # The worker is registered as waiting: the job is handed to it now; then the wait
        # fails (the connection was reset) and the worker is asked to stop meanwhile.
        assert client.exists(keys.idling("hs.1"))
        producer.queue_jobs([job])
        assert client.lrange("hs.1:jobs", 0, -1) == [job.id], "handed to the waiting worker"
        worker.request_stop()
        raise redis.ConnectionError("connection reset by peer")

    broker._client.blpop = failing_wait  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        thread.join(20)
        assert not thread.is_alive()
    finally:
        worker.request_stop()
        producer.close()
        broker.close()
    assert ran == []
    where = assert_each_job_in_one_place(client, [job.id])
    if where[job.id] == "hs.1:jobs":
        assert client.sismember("hs:workers", "hs.1"), "held by a worker that deregistered: lost"
    else:
        assert where[job.id] == "all:jobs"
