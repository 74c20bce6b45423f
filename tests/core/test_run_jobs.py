"""qw_core.testing.run_jobs: an application's jobs run through a real worker in its tests,
on the memory broker, on fakeredis (any client, decoding or not) and on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from qwtest_redis import flushed_db

from qw_core import Retry
from qw_core.broker import Broker
from qw_core.models import Decision, Job, Outcome
from qw_core.plugins import PluginConfig, hookimpl
from qw_core.policy import RetryPolicy
from qw_core.testing import TEST_MANAGER, MemoryBroker, TooManyRuns, run_jobs
from qw_core.worker import current_job
from qw_redis.broker import RedisBroker

REDIS_DB = 3
NO_INSTALLED_PLUGINS = PluginConfig(entry_points=False)
RETRY_TWICE = PluginConfig(entry_points=False, retry=RetryPolicy(max_retries=2, backoff=30.0, jitter=0.0))


@pytest.fixture(params=["memory", "fakeredis", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == "memory":
        broker: Broker = MemoryBroker()
        yield broker
        broker.close()
    elif request.param == "fakeredis":
        broker = RedisBroker(fakeredis.FakeRedis(server=fakeredis.FakeServer()))  # not decoding
        yield broker
        broker.close()
    else:
        with flushed_db(REDIS_DB) as client:
            broker = RedisBroker(client)
            yield broker
            broker.close()


seen: list[tuple[str, Any]] = []


def collect(job_id: str, job_data: Any) -> None:
    seen.append((job_id, job_data))


def flaky(job_id: str, job_data: Any) -> None:
    job = current_job()
    assert job is not None
    if job.attempts < job_data["fail_times"]:
        raise ConnectionError(f"attempt {job.attempts}")


@pytest.fixture(autouse=True)
def _clear_seen() -> None:
    seen.clear()


def test_every_queued_job_runs_once_with_its_data(broker: Broker) -> None:
    shared = broker.queue_jobs([Job.new({"n": n}) for n in range(5)])
    own = broker.queue_job(Job.new({"own": True}, manager=TEST_MANAGER))
    ran = run_jobs(broker, collect, plugins=NO_INSTALLED_PLUGINS)
    assert [r.outcome for r in ran] == [Outcome.SUCCEEDED] * 6
    assert all(r.succeeded and r.error is None for r in ran)
    assert sorted(job_id for job_id, _ in seen) == sorted([*shared, own])
    assert ran[0].job.id == own, "the manager's own queue comes first"
    assert sorted(data.get("n", -1) for _, data in seen) == [-1, 0, 1, 2, 3, 4]
    assert broker.queued_job_ids() == []
    assert broker.get_job(own) is None, "finished jobs are gone"
    assert broker.workers(TEST_MANAGER) == [], "its worker deregistered"


def test_a_target_string_is_loaded_as_qw_run_would(broker: Broker) -> None:
    broker.queue_job(Job.new({"x": 1}))
    [ran] = run_jobs(broker, f"{__name__}:collect", plugins=NO_INSTALLED_PLUGINS)
    assert ran.succeeded
    assert seen == [(ran.job.id, {"x": 1})]


def test_retries_run_at_once_and_each_run_is_reported(broker: Broker) -> None:
    job_id = broker.queue_job(Job.new({"fail_times": 2}))
    ran = run_jobs(broker, flaky, plugins=RETRY_TWICE)
    assert [r.outcome for r in ran] == [Outcome.RETRIED, Outcome.RETRIED, Outcome.SUCCEEDED]
    assert [r.job.attempts for r in ran] == [0, 1, 2]
    assert [str(r.error) for r in ran] == ["attempt 0", "attempt 1", "None"]
    assert broker.get_job(job_id) is None
    assert broker.failed_jobs() == []


def test_a_job_that_keeps_failing_ends_in_the_failed_registry(broker: Broker) -> None:
    job_id = broker.queue_job(Job.new({"fail_times": 99}))
    ran = run_jobs(broker, flaky, plugins=RETRY_TWICE)
    assert [r.outcome for r in ran] == [Outcome.RETRIED, Outcome.RETRIED, Outcome.FAILED]
    assert isinstance(ran[-1].error, ConnectionError)
    [failed] = broker.failed_jobs()
    assert failed.job.id == job_id
    assert failed.failure.exc_type == "builtins.ConnectionError"
    assert failed.job.attempts == 3


def test_retry_delays_can_be_kept_for_a_test_of_the_back_off(broker: Broker) -> None:
    job_id = broker.queue_job(Job.new({"fail_times": 1}))
    [ran] = run_jobs(broker, flaky, plugins=RETRY_TWICE, retry_delays=True)
    assert ran.outcome is Outcome.RETRIED
    assert broker.delayed_job_ids() == [job_id], "waiting its 30 s back-off, not run"


@hookimpl
def qw_job_failed(job: Job, worker: Any, exc: BaseException, failure: Any) -> Decision:
    """This module is also a user's plugin (see below): its decision wins over the built-in ones."""
    return Decision.drop()


def test_the_users_plugins_run_as_under_qw_run(broker: Broker) -> None:
    broker.queue_job(Job.new({"fail_times": 1}))
    plugins = PluginConfig(entry_points=False, modules=(f"{__name__}",))
    ran = run_jobs(broker, flaky, plugins=plugins)
    assert [r.outcome for r in ran] == [Outcome.DROPPED]
    assert broker.failed_jobs() == []


def requeue_forever(job_id: str, job_data: Any) -> None:
    raise Retry(delay=0)


def test_a_job_that_never_ends_stops_at_max_runs(broker: Broker) -> None:
    job_id = broker.queue_job(Job.new({}, meta={"retry": {"max_retries": 1000}}))
    with pytest.raises(TooManyRuns, match="more than 5 runs"):
        run_jobs(broker, requeue_forever, plugins=NO_INSTALLED_PLUGINS, max_runs=5)
    assert broker.queued_job_ids() == [job_id], "the job is still queued, not lost"


def test_nothing_queued_returns_at_once(broker: Broker) -> None:
    assert run_jobs(broker, collect, plugins=NO_INSTALLED_PLUGINS) == []


def test_with_the_failure_plugin_blocked_an_unanswered_failure_still_fails_the_job(broker: Broker) -> None:
    # No plugin answers qw_job_failed: the job is failed and kept, never dropped.
    job_id = broker.queue_job(Job.new({"fail_times": 1}))
    plugins = PluginConfig(entry_points=False, disabled=("qw.builtin.failures",))
    [ran] = run_jobs(broker, flaky, plugins=plugins)
    assert ran.outcome is Outcome.FAILED
    assert [entry.job.id for entry in broker.failed_jobs()] == [job_id]
