"""The broker contract, in part: job data, names, and concurrent takers.

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import pytest

from qw_core.broker import Broker
from qw_core.errors import InvalidJob, InvalidName
from qw_core.models import JSON, Job
from qw_core.testing import (
    MANAGER,
    WORKER,
    WORKER_2,
    drain,
    ids,
    make_jobs,
    opened,
)
from qw_core.testing.contract.base import ContractPart

#: Values whose JSON round trip must be exact, as job data.
ROUND_TRIP_VALUES: list[JSON] = [
    {},
    {"n": "7"},
    {"nested": {"list": [1, 2.5, "three", None, True, False], "deeper": {"x": {"y": []}}}},
    {"unicode": "ünïcödé ✓ 日本語 \U0001f600", "escapes": 'quote " back \\ nl \n tab \t nul \x00'},
    {"int": 2**62, "negative": -17, "zero": 0, "float": 0.1, "exp": 1e-300, "big": 1.7976931348623157e308},
    {"bools": [True, False], "none": None, "empty": {"list": [], "dict": {}, "str": ""}},
    [1, "two", {"three": 3}],
    [],
    "a top-level string",
    "",
    42,
    -0.5,
    True,
    None,
]


#: Job data no backend may accept: not JSON, or not representable exactly.
class Opaque:
    """An arbitrary Python object, not JSON; its repr is stable so test ids are too."""

    def __repr__(self) -> str:
        return "Opaque()"


INVALID_VALUES: list[Any] = [
    {"a set": {1, 2}},
    {"nan": float("nan")},
    {"infinity": float("inf")},
    {"bytes": b"raw"},
    {"object": Opaque()},
    {1: "an integer key"},
    {1, 2, 3},
]

INVALID_NAMES = [
    *("", "a:b", "has space", "tab\there", "new\nline", "all", "job", "qw", "x" * 201),
    *("zero\u200bwidth", "txt\u202eexe"),  # they would show as another name: 'zerowidth', 'txtexe' reversed
]
VALID_NAMES = ["m1", "host.example.com", "m1.12345", "web-01_a", "all.1", "jobs", "x" * 200]


class DataContract(ContractPart):
    """Job data, names, and concurrent takers."""

    # -- data ------------------------------------------------------------------------

    @pytest.mark.parametrize("data", ROUND_TRIP_VALUES, ids=repr)
    def test_job_data_round_trips_exactly(self, broker: Broker, data: JSON) -> None:
        job = Job.new(data, meta={"echo": data})
        broker.queue_job(job)
        [taken] = broker.take(manager=MANAGER, worker=WORKER)
        assert taken == job
        assert type(taken.data) is type(data)
        assert repr(taken.data) == repr(data)  # 1 == 1.0 == True; repr tells them apart

    def test_stored_data_is_not_shared_with_the_caller(self, broker: Broker) -> None:
        data: dict[str, JSON] = {"list": [1]}
        job = Job.new(data)
        broker.queue_job(job)
        data["list"] = [2]
        [taken] = broker.take(manager=MANAGER, worker=WORKER)
        assert taken.data == {"list": [1]}
        assert isinstance(taken.data, dict)
        taken.data["list"] = [3]
        assert broker.get_job(job.id) == attrs.evolve(job, data={"list": [1]})

    @pytest.mark.parametrize("data", INVALID_VALUES, ids=repr)
    def test_invalid_data_is_refused_and_nothing_is_written(self, broker: Broker, data: Any) -> None:
        valid = Job.new({"fine": True})
        invalid = Job.new(data)
        with pytest.raises(InvalidJob):
            broker.queue_jobs([valid, invalid])
        assert broker.get_job(valid.id) is None
        assert broker.get_job(invalid.id) is None
        assert broker.queued_job_ids() == []

    def test_invalid_meta_is_refused(self, broker: Broker) -> None:
        with pytest.raises(InvalidJob):
            broker.queue_job(Job.new({}, meta={"nan": float("nan")}))
        assert broker.queued_job_ids() == []

    # -- names -----------------------------------------------------------------------

    @pytest.mark.parametrize("name", INVALID_NAMES, ids=repr)
    def test_invalid_names_are_refused(self, broker: Broker, name: str) -> None:
        with pytest.raises(InvalidName) as caught:
            broker.check_name(name)
        assert "\n" not in str(caught.value)
        with pytest.raises(InvalidName):
            broker.register_manager(name)
        assert broker.managers() == []

    @pytest.mark.parametrize("name", VALID_NAMES, ids=lambda name: name[:20])
    def test_valid_names_are_accepted(self, broker: Broker, name: str) -> None:
        assert broker.check_name(name) == name

    @pytest.mark.parametrize("field", ["manager", "worker"])
    def test_queue_with_an_invalid_name_writes_nothing(self, broker: Broker, field: str) -> None:
        valid = Job.new({"fine": True})
        invalid = Job.new({}, manager="bad name") if field == "manager" else Job.new({}, worker="bad name")
        with pytest.raises(InvalidName):
            broker.queue_jobs([valid, invalid])
        assert broker.get_job(valid.id) is None
        assert broker.queued_job_ids() == []

    # -- concurrency -----------------------------------------------------------------

    def test_concurrent_workers_take_each_job_exactly_once(self, broker: Broker) -> None:
        jobs = make_jobs(1000)
        broker.queue_jobs(jobs)
        factory = broker.factory()

        def work(worker: str) -> list[str]:
            with opened(factory) as mine:
                return ids(drain(mine, worker=worker, limit=10))

        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(work, [WORKER, WORKER_2])
        assert len(first) + len(second) == len(jobs)
        assert sorted(first + second) == sorted(ids(jobs))
        assert broker.queued_job_ids() == []
        assert broker.held_job_ids(WORKER) == broker.held_job_ids(WORKER_2) == []
        assert all(broker.get_job(job.id) is None for job in jobs[::50])
