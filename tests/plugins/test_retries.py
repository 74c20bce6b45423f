"""The built-in retry plugin: every branch of the policy, on a real worker and the memory broker."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest
from plugin_support import running_worker, wait_for

from qw_core import (
    ConfigurationError,
    Decision,
    Failure,
    InvalidResult,
    InvalidTaskCall,
    Job,
    Outcome,
    PermanentFailure,
    PluginConfig,
    Retry,
    RetryPolicy,
    UnknownTask,
    WorkerInfo,
    hookimpl,
    make_plugin_manager,
)
from qw_core.builtin.retries import RetryPlugin
from qw_core.memory import MemoryBroker
from qw_core.policy import exception_names
from qw_core.worker import current_job

FAST = {"backoff": 0.01, "jitter": 0.0}
R, S, F = Outcome.RETRIED, Outcome.SUCCEEDED, Outcome.FAILED


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


def config(**policy: Any) -> PluginConfig:
    return PluginConfig(entry_points=False, retry=RetryPolicy(**{**FAST, **policy}))


def failing(times: int, exc: BaseException) -> Any:
    """A target that raises ``exc`` on its first ``times`` runs of each job, recording attempts."""
    attempts: list[int] = []

    def target(job_id: str, job_data: Any) -> None:
        job = current_job()
        assert job is not None
        attempts.append(job.attempt)
        if job.attempt <= times:
            raise exc

    target.attempts = attempts  # type: ignore[attr-defined]
    return target


def run_one(broker: MemoryBroker, target: Any, cfg: PluginConfig, job: Job | None = None) -> list[Outcome]:
    job = job or Job.new({"n": 1})
    broker.queue_job(job)
    with running_worker(broker, target, cfg) as recorder:
        wait_for(lambda: recorder.settled(job.id), what="the job to settle")
    return recorder.outcomes(job.id)


def test_retried_then_succeeds_and_the_target_sees_each_attempt(broker: MemoryBroker) -> None:
    target = failing(2, ValueError("flaky"))
    assert run_one(broker, target, config(max_retries=3)) == [R, R, S]
    assert target.attempts == [1, 2, 3]
    assert broker.failed_count() == 0


def test_retries_exhausted_go_to_the_failed_registry(broker: MemoryBroker) -> None:
    target = failing(99, ValueError("always"))
    job = Job.new({"n": 1})
    assert run_one(broker, target, config(max_retries=2), job) == [R, R, F]
    failed = broker.get_failed(job.id)
    assert failed is not None
    assert failed.job.attempts == 3, "three runs, all failed"
    assert failed.failure.exc_type == "builtins.ValueError"
    assert failed.failure.message == "always"
    assert "Traceback" in failed.failure.traceback
    assert failed.failure.worker == "m1.1"


def test_no_retries_by_default(broker: MemoryBroker) -> None:
    target = failing(1, ValueError("once"))
    assert run_one(broker, target, PluginConfig(entry_points=False)) == [F]
    assert broker.failed_count() == 1


@pytest.mark.parametrize(
    ("policy", "exc"),
    [
        ({"never_retry_on": ["KeyError"]}, KeyError("k")),
        ({"never_retry_on": ["builtins.LookupError"]}, KeyError("subclass of a never")),
        ({"retry_on": ["ConnectionError"]}, ValueError("not listed")),
        ({"retry_on": ["ValueError"], "never_retry_on": ["ValueError"]}, ValueError("never wins")),
    ],
)
def test_non_retryable_exceptions_fail_at_once(
    broker: MemoryBroker, policy: dict[str, Any], exc: Exception
) -> None:
    assert run_one(broker, failing(1, exc), config(max_retries=5, **policy)) == [F]


@pytest.mark.parametrize(
    "exc",
    [
        UnknownTask("no task named 'x'"),
        InvalidTaskCall("missing a required argument"),
        InvalidResult("a set is not JSON"),
    ],
)
def test_a_permanent_failure_is_never_retried(broker: MemoryBroker, exc: PermanentFailure) -> None:
    target = failing(1, exc)
    assert run_one(broker, target, config(max_retries=5)) == [F]
    assert target.attempts == [1]
    [failed] = broker.failed_jobs()
    assert failed.job.attempts == 1


def test_a_permanent_failure_of_a_targets_own_is_not_retried_but_a_retry_request_is(
    broker: MemoryBroker,
) -> None:
    class PaymentDeclined(PermanentFailure):
        pass

    assert run_one(broker, failing(1, PaymentDeclined("card expired")), config(max_retries=5)) == [F]
    target = failing(1, Retry(delay=0))
    assert run_one(broker, target, config(max_retries=5)) == [R, S]


def test_retry_on_matches_subclasses_by_name(broker: MemoryBroker) -> None:
    target = failing(1, ConnectionRefusedError("down"))
    assert run_one(broker, target, config(max_retries=5, retry_on=["OSError"])) == [R, S]


def test_a_job_overrides_the_managers_policy(broker: MemoryBroker) -> None:
    more = Job.new({"n": 1}, meta={"retry": {"max_retries": 2, "backoff": 0.01}})
    assert run_one(broker, failing(99, ValueError()), config(max_retries=0), more) == [R, R, F]
    fewer = Job.new({"n": 2}, meta={"retry": {"max_retries": 0}})
    assert run_one(broker, failing(99, ValueError()), config(max_retries=5), fewer) == [F]


def test_an_invalid_override_is_ignored_with_a_warning(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    job = Job.new({"n": 1}, meta={"retry": {"max_retries": -1, "typo": 1}})
    with caplog.at_level(logging.WARNING, logger="qw.retries"):
        assert run_one(broker, failing(1, ValueError()), config(max_retries=1), job) == [R, S]
    assert "ignoring its retry settings" in caplog.text


def test_a_target_can_ask_for_a_retry_with_a_delay(broker: MemoryBroker) -> None:
    job = Job.new({"n": 1})
    cfg = config(max_retries=1, retry_on=["ConnectionError"], backoff=60)  # the request's delay wins
    broker.queue_job(job)
    with running_worker(broker, failing(1, Retry("later", delay=0.3)), cfg) as recorder:
        wait_for(lambda: recorder.settled(job.id), what="the job to settle")
    (_, _, first, at_first), (_, _, second, at_second) = recorder.runs
    assert (first, second) == (R, S)
    assert at_second - at_first >= 0.25


def test_a_retry_request_counts_against_max_retries(broker: MemoryBroker) -> None:
    job = Job.new({"n": 1})
    assert run_one(broker, failing(99, Retry(delay=0)), config(max_retries=1), job) == [R, F]
    failed = broker.get_failed(job.id)
    assert failed is not None
    assert failed.failure.exc_type == "qw_core.errors.Retry"


def test_blocking_the_plugin_turns_retries_off(broker: MemoryBroker) -> None:
    cfg = PluginConfig(entry_points=False, disabled=("qw.builtin.retries",), retry=RetryPolicy(max_retries=5))
    assert run_one(broker, failing(1, ValueError()), cfg) == [F]


class DropEverything:
    """A user's plugin with its own opinion about failed jobs."""

    @hookimpl
    def qw_job_failed(self, job: Job, worker: WorkerInfo, exc: BaseException, failure: Failure) -> Decision:
        return Decision.drop()


def test_a_user_plugin_decides_before_the_retry_plugin() -> None:
    cfg = PluginConfig(entry_points=False, retry=RetryPolicy(max_retries=5))
    pm = make_plugin_manager(cfg, extra=[DropEverything()])
    worker = WorkerInfo(name="m1.1", manager="m1", pid=1)
    failure = Failure(exc_type="builtins.ValueError", message="")
    decision = pm.hook.qw_job_failed(job=Job.new({}), worker=worker, exc=ValueError(), failure=failure)
    assert decision == Decision.drop()


# -- the policy itself ---------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_without_jitter() -> None:
    policy = RetryPolicy(backoff=1, backoff_max=5, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert policy.delay(10_000) == 5


def test_jitter_only_shortens_and_stays_within_its_fraction() -> None:
    policy = RetryPolicy(backoff=2, backoff_max=100, jitter=0.25)
    rng = random.Random(7)
    delays = [policy.delay(3, rng=rng) for _ in range(500)]
    assert all(6.0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 1.5, "jitter spreads the delays"


@pytest.mark.parametrize(
    "bad",
    [
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retries": True},
        {"backoff": -1},
        {"jitter": 2},
        {"backoff_max": "soon"},
        {"backoff_max": float("inf")},
        {"backoff": float("nan")},
        {"jitter": float("nan")},
    ],
)
def test_invalid_policies_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**bad)


def test_overrides_are_checked() -> None:
    policy = RetryPolicy(max_retries=1)
    assert policy.with_overrides({"max_retries": 4, "retry_on": ["OSError"]}) == RetryPolicy(
        max_retries=4, retry_on=("OSError",)
    )
    for bad in ([1], {"unknown": 1}, {"jitter": 3}):
        with pytest.raises(ConfigurationError):
            policy.with_overrides(bad)


def test_exception_names_cover_the_hierarchy() -> None:
    names = exception_names(ConnectionRefusedError())
    assert {"ConnectionRefusedError", "builtins.OSError", "OSError", "Exception"} <= names
    assert "qw_core.errors.Retry" in exception_names(Retry())
    assert "qw_core.errors.QwError" in exception_names(Retry())


def test_the_plugin_is_built_from_the_config() -> None:
    policy = RetryPolicy(max_retries=3)
    pm = make_plugin_manager(PluginConfig(entry_points=False, retry=policy))
    plugin = pm.get_plugin("qw.builtin.retries")
    assert isinstance(plugin, RetryPlugin)
    assert plugin.policy == policy
