"""Results a backend cannot keep, on a real Redis: the job fails visibly with
``InvalidResult`` (in the failed registry, its worker alive), never a worker that dies or
retries the write for ever."""

from __future__ import annotations

from typing import Any

import pytest

from qw_core import results
from qw_core.errors import InvalidResult
from qw_core.models import Job, Outcome
from qw_core.testing import run_jobs
from qw_redis.broker import RedisBroker

REDIS_DB = 4


def lone_surrogate(job_id: str, job_data: Any) -> str:
    return "half of a pair: \ud800"


def two_kilobytes(job_id: str, job_data: Any) -> str:
    return "x" * 2000


def _the_job_failed_with_invalid_result(broker: RedisBroker, target: Any, needle: str) -> None:
    job = Job.new({})
    broker.queue_job(job)
    [ran] = run_jobs(broker, target)
    assert ran.outcome is Outcome.FAILED
    assert isinstance(ran.error, InvalidResult)
    assert needle in str(ran.error)
    failed = broker.get_failed(job.id)
    assert failed is not None
    assert failed.failure.exc_type == "qw_core.errors.InvalidResult"
    assert broker.get_result(job.id) is None


def test_a_result_that_is_not_unicode_text_fails_its_job(real_broker: RedisBroker) -> None:
    """A lone surrogate passes json.dumps but no backend can store it: Redis's encoder
    raised in the worker's settle call, which killed the worker process after a few tries
    and, once the job had killed four, failed it as a crash instead of saying why."""
    _the_job_failed_with_invalid_result(real_broker, lone_surrogate, "surrogates not allowed")


def test_a_result_over_the_size_limit_fails_its_job(
    real_broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 512 MiB, Redis drops the connection instead of storing the value: the worker
    took that for an outage and retried the write for ever, holding the job. The limit is
    lowered here so that the test need not build half a gigabyte."""
    monkeypatch.setattr(results, "MAX_RESULT_SIZE", 1000)
    _the_job_failed_with_invalid_result(
        real_broker, two_kilobytes, "2002 bytes of JSON, over the limit of 1000"
    )
