"""What a target returns: kept as its job's result (qw_core.results), through a real worker."""

from __future__ import annotations

import math
from typing import Any

import pytest

from qw_core import Job, results
from qw_core.errors import ConfigurationError, InvalidResult
from qw_core.models import Outcome
from qw_core.results import encode_value
from qw_core.testing import MemoryBroker, run_jobs
from qw_core.worker import Worker


def resize(job_id: str, job_data: Any) -> dict[str, Any]:
    return {"image": job_data["image"], "width": 100, "sizes": [1, 2.5, None, True]}


async def aresize(job_id: str, job_data: Any) -> str:
    return f"resized {job_data['image']}"


def nothing(job_id: str, job_data: Any) -> None:
    return None


def a_set(job_id: str, job_data: Any) -> set[int]:
    return {1, 2}


def test_what_a_target_returns_is_kept_with_its_job() -> None:
    broker = MemoryBroker()
    job = Job.new({"image": "cat.png"})
    broker.queue_job(job)
    [ran] = run_jobs(broker, resize)
    assert ran.succeeded
    found = broker.get_result(job.id)
    assert found is not None
    assert found.value == {"image": "cat.png", "width": 100, "sizes": [1, 2.5, None, True]}
    assert broker.held_job_ids("test.run-jobs") == []


def test_an_async_targets_return_value_is_kept_too() -> None:
    broker = MemoryBroker()
    job = Job.new({"image": "dog.png"})
    broker.queue_job(job)
    [ran] = run_jobs(broker, aresize)
    assert ran.succeeded
    found = broker.get_result(job.id)
    assert found is not None
    assert found.value == "resized dog.png"


def test_a_target_that_returns_none_keeps_nothing() -> None:
    broker = MemoryBroker()
    job = Job.new({})
    broker.queue_job(job)
    [ran] = run_jobs(broker, nothing)
    assert ran.succeeded
    assert broker.get_result(job.id) is None


def test_a_value_that_is_not_json_fails_the_job_with_a_clear_error() -> None:
    broker = MemoryBroker()
    job = Job.new({})
    broker.queue_job(job)
    [ran] = run_jobs(broker, a_set)
    assert ran.outcome is Outcome.FAILED
    assert isinstance(ran.error, InvalidResult)
    assert f"job {job.id} returned set, which is not JSON" in str(ran.error)
    failed = broker.get_failed(job.id)
    assert failed is not None
    assert failed.failure.exc_type == "qw_core.errors.InvalidResult"
    assert broker.get_result(job.id) is None


@pytest.mark.parametrize(
    ("value", "what"), [(math.nan, "nan"), ({1: "a"}, "dict"), (object(), "object"), ({"a": {1, 2}}, "dict")]
)
def test_values_json_cannot_carry_are_refused(value: object, what: str) -> None:
    with pytest.raises(InvalidResult, match=f"returned {what}, which is not JSON"):
        encode_value(value, "j1")


def test_a_result_ttl_of_zero_keeps_nothing_and_finishes_the_job() -> None:
    broker = MemoryBroker()
    job = Job.new({"image": "cat.png"})
    broker.queue_job(job)
    worker = Worker(broker, resize, manager="m", name="m.1", burst=True, result_ttl=0)
    worker.run()
    assert broker.get_result(job.id) is None
    assert broker.held_job_ids("m.1") == []
    assert broker.get_job(job.id) is None


@pytest.mark.parametrize("ttl", [-1, math.inf, math.nan])
def test_a_result_ttl_that_cannot_be_one_is_refused(ttl: float) -> None:
    with pytest.raises(ConfigurationError, match="a result's lifetime must be 0 or more seconds"):
        Worker(MemoryBroker(), resize, manager="m", result_ttl=ttl)


def test_text_no_backend_can_store_is_refused() -> None:
    with pytest.raises(InvalidResult, match=r"returned list, which is not JSON .*surrogates not allowed"):
        encode_value(["fine", "\udc80"], "j1")


def test_a_result_is_measured_in_utf8_bytes_against_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "MAX_RESULT_SIZE", 10)
    assert encode_value("é" * 4, "j1") == '"éééé"'  # 10 bytes: at the limit
    with pytest.raises(InvalidResult, match="returned 12 bytes of JSON, over the limit of 10"):
        encode_value("é" * 5, "j1")
