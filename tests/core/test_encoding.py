"""One encoding of jobs and failures as JSON objects, with one rule for reading them back:
unknown keys are ignored, missing ones take the model's defaults (every backend's records;
the Redis and PostgreSQL tests check theirs through their brokers)."""

from __future__ import annotations

import json

import attrs
import pytest

from qw_core import encoding
from qw_core.errors import InvalidJob
from qw_core.memory import MemoryBroker
from qw_core.models import Failure, Job

JOB = Job(id="j", data=[1, {"a": None, "é": "ü"}], manager="m", attempts=2, queued_at=1.5, meta={"k": "v"})
FAILURE = Failure(kind="timeout", exc_type="E", message="m", traceback="tb", worker="m.1", failed_at=3.0)


def test_jobs_and_failures_round_trip() -> None:
    assert encoding.decode_job(encoding.encode_job(JOB)) == JOB
    assert encoding.decode_failure(encoding.encode_failure(FAILURE)) == FAILURE


def test_the_text_is_compact_utf8() -> None:
    assert encoding.encode_job(Job(id="x", data="é")) == (
        '{"id":"x","data":"é","manager":null,"worker":null,"queue":null,"attempts":0,'
        '"queued_at":null,"meta":{}}'
    )


def test_keys_a_reader_does_not_know_are_ignored() -> None:
    newer_job = json.dumps({**json.loads(encoding.encode_job(JOB)), "from_the_future": [1]})
    newer_failure = json.dumps({**json.loads(encoding.encode_failure(FAILURE)), "from_the_future": 1})
    assert encoding.decode_job(newer_job) == JOB
    assert encoding.decode_failure(newer_failure) == FAILURE


def test_missing_keys_take_the_models_defaults() -> None:
    assert encoding.decode_job('{"id":"old","data":{"n":1}}') == Job(id="old", data={"n": 1})
    found = encoding.decode_failure('{"exc_type":"E","message":"m","failed_at":2.0}')
    assert found == Failure(exc_type="E", message="m", failed_at=2.0)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"data":1}', "has no id"),
        ("[1]", "not a JSON object"),
        ("{nope", "not JSON"),
    ],
)
def test_an_unreadable_job_is_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidJob, match=reason):
        encoding.decode_job(text)


def test_a_failure_without_its_type_or_message_is_invalid() -> None:
    with pytest.raises(InvalidJob, match="no exc_type or message"):
        encoding.decode_failure('{"kind":"error"}')


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ((1, 2), "tuple"),
        ({1: "a"}, "the key 1"),
        (float("nan"), "nan"),
        ({"s": {1}}, "set"),
        ({"n": [10**5000]}, r"data\['n'\]\[0\] holds an int too long to write as text"),
    ],
)
def test_writing_refuses_what_would_not_come_back_equal(data: object, reason: str) -> None:
    with pytest.raises(InvalidJob, match=reason):
        encoding.encode_job(Job(id="j", data=data))  # type: ignore[arg-type]


def test_the_memory_backend_reads_records_with_unknown_keys() -> None:
    broker = MemoryBroker()
    job = Job.new({"n": 1}, manager="m")
    broker.queue_job(job)
    broker.take(manager="m", worker="m.1")
    assert broker.fail_job(worker="m.1", job=job, failure=FAILURE)
    state = broker._state
    entry = state.failed[job.id]
    state.failed[job.id] = attrs.evolve(
        entry,
        job=json.dumps({**json.loads(entry.job), "from_the_future": 1}),
        failure=json.dumps({**json.loads(entry.failure), "from_the_future": 1}),
    )
    found = broker.get_failed(job.id)
    assert found is not None
    assert found.job == attrs.evolve(job, attempts=1)
    assert (found.failure.exc_type, found.failure.message) == ("E", "m")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NaN", "NaN is not JSON"),
        ("[-Infinity]", "-Infinity is not JSON"),
        ('{"n": 1e400}', "1e400 is beyond the largest float"),
        ("-1.5e309", "-1.5e309 is beyond the largest float"),
    ],
)
def test_strict_reading_refuses_what_could_not_be_written_again(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        encoding.loads_strict(text)


def test_strict_reading_reads_what_writing_writes() -> None:
    value = {"f": [1.5, -0.0, 1e308, 5e-324], "i": 10**30, "s": "é", "n": None, "b": True}
    assert encoding.loads_strict(encoding.dumps(value)) == value
    assert encoding.loads_strict(encoding.dumps(value).encode()) == value
