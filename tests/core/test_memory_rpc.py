"""The memory broker's forwarding client and its wire: every role's method crosses, values
come back equal, and nothing off the allow-lists is run or built.

(The whole contract suite runs through the client too: tests/core/test_memory_broker.py.)"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import pytest

from qw_core.broker import (
    Administrator,
    Broker,
    Consumer,
    Inspector,
    Membership,
    Periodic,
    Producer,
    Reaped,
    Role,
)
from qw_core.errors import BackendError, InvalidJob, InvalidName
from qw_core.memory import MemoryBroker
from qw_core.memory_rpc import FORWARDED, LOCAL, MemoryClient, decode, encode
from qw_core.models import (
    FailedJob,
    Failure,
    Job,
    JobsRun,
    JobState,
    RunningJob,
    ScheduleInfo,
    State,
    TickResult,
    TickState,
)
from qw_core.policy import FailedLimits
from qw_core.results import JobResult
from qw_core.testing import MANAGER, WORKER, opened
from qw_core.unique import Queued

JOB = Job(id="j1", data={"n": [1, 2.5, None]}, manager="m", attempts=2, queued_at=1.5, meta={"k": "v"})
FAILURE = Failure(kind="crashed", exc_type="E", message="é", traceback="tb", worker="m.1", failed_at=2.0)
RESULT = JobResult(job_id="j1", value={"t": "tuple", "v": [1]}, finished_at=3.0, worker="m.1")
TICK = TickState(tick=60.0, manager="m", at=61.0, job_id="tick-1")


@pytest.fixture
def client() -> Iterator[Broker]:
    broker = MemoryBroker()
    with opened(broker.factory()) as client:
        yield client
    broker.close()


def test_every_method_of_every_role_is_forwarded_or_run_by_the_client() -> None:
    public = {
        name
        for role in (Role, Producer, Consumer, Membership, Inspector, Administrator, Periodic, Broker)
        for name in vars(role)
        if not name.startswith("_") and name != "capabilities"
    }
    assert public == FORWARDED | LOCAL
    assert not FORWARDED & LOCAL
    assert not getattr(MemoryClient, "__abstractmethods__", frozenset())


@pytest.mark.parametrize(
    "value",
    [
        JOB,
        FAILURE,
        FailedJob(job=JOB, failure=FAILURE),
        JobState(job_id="j1", state=State.FAILED, job=JOB, failure=FAILURE, queue="q", worker="m.1"),
        JobState(job_id="j1", state=State.SUCCEEDED, result=RESULT, finished_at=3.0),
        RESULT,
        JobsRun(minute=60, counts={"m": 3}),
        RunningJob(job_id="j1", worker="m.1", since=1.0, queue=None),
        ScheduleInfo(
            id="s",
            cron="* * * * *",
            timezone="UTC",
            queue=None,
            next_run=1.0,
            last_run=None,
            last_manager=None,
            declared_by=("m",),
        ),
        TickResult(enqueued=True, last=TICK),
        {"s": TICK, "t": None},
        FailedLimits(max_count=5, max_age=None),
        [Queued("j1", False)],
        [Reaped(manager="m", worker="m.1", requeued=2)],
        ("token", 2.5),
        {"worker": {"job": 1.0}},
        [True, None, "x", 1, 1.5],
        State.HELD,
    ],
    ids=lambda value: type(value).__name__,
)
def test_values_cross_the_wire_equal(value: Any) -> None:
    assert decode(json.loads(json.dumps(encode(value)))) == value


def test_a_jobs_suspect_mark_crosses_too() -> None:
    # Job.suspect takes no part in equality, so it is checked on its own.
    suspect = Job(id="j", suspect=True)
    assert decode(json.loads(json.dumps(encode(suspect)))).suspect


def test_data_shaped_like_the_wires_tags_is_not_read_as_them() -> None:
    job = Job(id="j", data={"t": "tuple", "v": [1, 2]}, meta={"t": "Job", "v": {}})
    assert decode(json.loads(json.dumps(encode(job)))) == job


def test_what_the_wire_cannot_carry_is_refused() -> None:
    with pytest.raises(TypeError, match="a set cannot be sent"):
        encode({1, 2})
    with pytest.raises(TypeError, match="datetime cannot be sent"):
        encode(datetime.datetime.now(datetime.timezone.utc))
    with pytest.raises(InvalidJob):
        encode(Job(id="j", data={"n": (1, 2)}))  # type: ignore[dict-item]
    with pytest.raises(BackendError, match="carries no 'Path'"):
        decode({"t": "Path", "v": "/etc/passwd"})


def test_the_server_runs_only_the_forwarded_methods(client: Broker) -> None:
    assert isinstance(client, MemoryClient)
    with pytest.raises(BackendError, match="serves no call 'close'"):
        client._call("close", (), {})
    with pytest.raises(BackendError, match="serves no call '__init__'"):
        client._call("__init__", (), {})
    assert client.managers() == []  # the broker is still open and the connection too


def test_errors_come_back_as_their_own_class(client: Broker) -> None:
    with pytest.raises(InvalidName, match="':'"):
        client.check_name("a:b")
    with pytest.raises(ValueError, match="offset must not be negative"):
        client.queued_job_ids(offset=-1)


def test_the_client_runs_the_calls_that_cannot_cross_on_forwarded_ones(client: Broker) -> None:
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    job_id = client.queue_job(Job.new({"n": 1}), at=later)
    assert client.delayed_job_ids() == [job_id]
    client.queue_jobs([Job.new({"n": 2}, manager=MANAGER)])
    [job] = client.take(manager=MANAGER, worker=WORKER)
    assert client.fail_job(worker=WORKER, job=job, failure=FAILURE)
    reported: list[list[str]] = []
    assert client.requeue_all_failed(progress=lambda ids: reported.append(list(ids))) == 1
    assert reported == [[job.id]]
