"""The job hash encoding (no Redis needed, except the fakeredis round trip at the end)."""

from __future__ import annotations

import json
import math
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qw_core.errors import InvalidJob, JobTooLarge
from qw_core.models import JSON, Failure, Job
from qw_redis import codec
from qw_redis.broker import RedisBroker


def marker(fields: dict[str, str]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(fields[codec.MARKER])
    return value


# -- hashes written by hand ----------------------------------------------------------


def test_a_hash_without_marker_reaches_the_target_as_plain_strings() -> None:
    job = codec.decode_job("id1", {"n": "7", "name": "x", "json": '{"a": 1}'})
    assert job.data == {"n": "7", "name": "x", "json": '{"a": 1}'}
    assert (job.manager, job.worker, job.attempts, job.queued_at, job.meta) == (None, None, 0, None, {})


def test_a_missing_hash_is_refused_not_run_with_empty_data() -> None:
    # Redis has no empty hashes and the original client could not queue empty data: an id
    # without its hash was queued twice, or lost its data. Running it with {} would run a
    # job with data it was not queued with.
    with pytest.raises(InvalidJob, match="has no data"):
        codec.decode_job("id1", {})


@pytest.mark.parametrize(
    "fields",
    [{"n": "caf\udce9"}, {"caf\udce9": "x"}, {"__qw__": '{"v":1}', "n": "\udcff"}],
    ids=["value", "field name", "qw hash"],
)
def test_bytes_that_are_not_utf8_make_a_job_invalid(fields: dict[str, str]) -> None:
    with pytest.raises(InvalidJob, match=r"not UTF-8 text: .*\\x"):
        codec.decode_job("id1", fields)


def test_an_id_that_is_not_unicode_text_is_refused_at_queue_time(fake_broker: RedisBroker) -> None:
    with pytest.raises(InvalidJob, match="not valid unicode"):
        fake_broker.queue_job(Job(id="a\ud800b", data={}))
    assert codec.encode_job(Job(id="read-\udcff", data={}))  # one read back is stored as it came


def test_shown_escapes_bytes_that_were_not_utf8() -> None:
    assert codec.shown("plain") == "plain"
    assert codec.shown("caf\udce9 é") == "caf\\xe9 é"
    assert codec.shown("\ud800") == "\\ud800"


def test_the_queue_a_hand_written_job_came_from_is_kept() -> None:
    assert codec.decode_job("id1", {"n": "7"}, manager="m1").manager == "m1"
    assert codec.decode_job("id1", {"n": "7"}, worker="m1.1").worker == "m1.1"


# -- the layout qw writes ------------------------------------------------------------


def test_string_values_are_stored_raw_and_others_as_listed_json() -> None:
    fields = codec.encode_job(Job(id="j", data={"name": "x", "n": 7, "ok": True, "l": [1, "a"]}))
    assert fields["name"] == "x"
    assert fields["n"] == "7"
    assert fields["ok"] == "true"
    assert fields["l"] == '[1,"a"]'
    assert marker(fields) == {"v": 1, "json": ["n", "ok", "l"], "keys": ["name", "n", "ok", "l"]}


def test_a_flat_string_map_carries_only_a_small_marker() -> None:
    fields = codec.encode_job(Job(id="j", data={"n": "7"}))
    assert fields == {"n": "7", "__qw__": '{"v":1}'}


def test_metadata_is_in_the_marker_and_defaults_are_left_out() -> None:
    job = Job(id="j", data={}, manager="m1", worker="m1.2", attempts=3, queued_at=12.5, meta={"t": [1]})
    fields = codec.encode_job(job)
    assert set(fields) == {codec.MARKER}
    assert marker(fields) == {
        "v": 1,
        "manager": "m1",
        "worker": "m1.2",
        "attempts": 3,
        "queued_at": 12.5,
        "meta": {"t": [1]},
    }
    assert codec.decode_job("j", fields) == job


@pytest.mark.parametrize("data", [[1, 2], "text", 42, 1.5, True, None, {"__qwx": 1}, {"__qw__": "x"}])
def test_anything_but_a_plain_mapping_is_one_json_field(data: JSON) -> None:
    fields = codec.encode_job(Job(id="j", data=data))
    assert set(fields) == {codec.DATA_FIELD, codec.MARKER}
    assert json.loads(fields[codec.DATA_FIELD]) == data
    decoded = codec.decode_job("j", fields).data
    assert decoded == data
    assert type(decoded) is type(data)


def test_unicode_is_stored_as_utf8_not_escaped() -> None:
    fields = codec.encode_job(Job(id="j", data={"s": "日本", "l": ["é"]}))
    assert fields["s"] == "日本"
    assert fields["l"] == '["é"]'


def test_field_order_survives_even_when_redis_forgets_it() -> None:
    data: JSON = {"b": 1, "a": "x", "c": [2]}
    fields = codec.encode_job(Job(id="j", data=data))
    shuffled = dict(reversed(list(fields.items())))
    assert list(codec.decode_job("j", shuffled).data) == ["b", "a", "c"]  # type: ignore[arg-type]


def test_fields_added_by_hand_to_a_qw_hash_come_back_as_strings() -> None:
    fields = codec.encode_job(Job(id="j", data={"a": 1, "b": 2}))
    fields["extra"] = "hand"
    assert codec.decode_job("j", fields).data == {"a": 1, "b": 2, "extra": "hand"}


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"x": math.nan}, "not JSON"),
        ({"x": math.inf}, "not JSON"),
        ({"x": {1, 2}}, "not JSON"),
        ({"x": (1, 2)}, "tuple"),
        ({"x": {1: "a"}}, "key 1"),
        ({1: "a"}, "key 1"),
        ({"x": b"raw"}, "not JSON"),
        ([{"deep": [(1,)]}], "tuple"),
        ({"x": "\ud800"}, "unicode"),
        ({"\ud800": "x"}, "unicode"),
    ],
)
def test_values_json_would_change_are_refused(data: Any, why: str) -> None:
    with pytest.raises(InvalidJob, match=why):
        codec.encode_job(Job(id="j", data=data))


def test_non_json_meta_is_refused() -> None:
    with pytest.raises(InvalidJob, match="meta"):
        codec.encode_job(Job(id="j", data={}, meta={"x": math.nan}))


def test_an_empty_id_is_refused() -> None:
    with pytest.raises(InvalidJob, match="id"):
        codec.encode_job(Job(id="", data={}))


def test_size_limit_counts_utf8_bytes_of_names_and_values() -> None:
    fields = codec.encode_job(Job(id="j", data={"s": "é" * 100}), max_size=0)
    size = codec.hash_size(fields)
    assert size == 1 + 200 + len("__qw__") + len('{"v":1}')
    assert codec.encode_job(Job(id="j", data={"s": "é" * 100}), max_size=size) == fields
    with pytest.raises(JobTooLarge, match=f"{size} bytes; the limit is {size - 1}"):
        codec.encode_job(Job(id="j", data={"s": "é" * 100}), max_size=size - 1)


@pytest.mark.parametrize(
    "marker_text",
    ["not json", "[1]", '{"v": "1"}', '{"v": 2}', '{"v": 1, "json": ["n"]}'],
)
def test_an_undecodable_qw_hash_is_invalid(marker_text: str) -> None:
    with pytest.raises(InvalidJob, match="cannot be decoded"):
        codec.decode_job("j", {"n": "not json either", "__qw__": marker_text})


# -- the failed registry -------------------------------------------------------------


def test_records_and_failures_round_trip() -> None:
    job = Job(id="j", data=[1, {"a": None}], manager="m", attempts=2, queued_at=1.0, meta={"k": "v"})
    assert codec.decode_record(codec.encode_record(job)) == job
    failure = Failure(kind="timeout", exc_type="E", message="m", traceback="tb", worker="m.1", failed_at=3.0)
    assert codec.decode_failure(codec.encode_failure(failure)) == failure
    newer = json.dumps({**json.loads(codec.encode_failure(failure)), "from_the_future": 1})
    assert codec.decode_failure(newer) == failure


# -- any JSON value round-trips ------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


def assert_identical(got: object, want: object) -> None:
    """Equal, same types all the way down, same key order (1 == 1.0 == True otherwise)."""
    assert type(got) is type(want)
    assert repr(got) == repr(want)


@given(json_values)
def test_codec_round_trips_any_json_value(data: JSON) -> None:
    job = Job(id="j", data=data, meta={"echo": data})
    assert_identical(codec.decode_job("j", codec.encode_job(job, max_size=0)).data, data)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=json_values)
def test_queue_to_target_round_trips_any_json_value_through_fakeredis(
    fake_broker: RedisBroker, data: JSON
) -> None:
    job = Job.new(data)
    fake_broker.queue_job(job)
    [taken] = fake_broker.take(manager="m1", worker="m1.1", limit=1)
    assert taken == job
    assert_identical(taken.data, data)
    fake_broker.finish_jobs(worker="m1.1", job_ids=[job.id])


def test_the_fakeredis_server_is_left_empty_by_the_round_trip(fake_client: fakeredis.FakeRedis) -> None:
    broker = RedisBroker(fake_client)
    job = Job.new({"a": [1.5, None]})
    broker.queue_job(job)
    [taken] = broker.take(manager="m1", worker="m1.1")
    broker.finish_jobs(worker="m1.1", job_ids=[taken.id])
    assert set(fake_client.keys("*")) - set(fake_client.keys("qw:producer:*")) <= {"qw:wake:all"}


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"__qw__": "[" * 100_000}, "cannot be decoded"),  # deeper than the parser can go
        ({"__qw__": '{"v": 1, "json": ["x"]}', "x": "[" * 100_000}, "cannot be decoded"),
        ({"__qw__": '{"v": 1, "json": ["n"]}', "n": "NaN"}, "NaN is not JSON"),
        ({"__qw__": '{"v": 1, "json": ["n"]}', "n": "Infinity"}, "Infinity is not JSON"),
        ({"__qw__": '{"v": 1, "meta": [1]}'}, r"'meta' has the wrong type \(list\)"),
        ({"__qw__": '{"v": 1, "attempts": -1}'}, "'attempts' is negative"),
        ({"__qw__": '{"v": 1, "attempts": true}'}, r"'attempts' has the wrong type \(bool\)"),
        ({"__qw__": '{"v": 1, "manager": 7}'}, r"'manager' has the wrong type \(int\)"),
        ({"__qw__": '{"v": 1, "json": [1]}'}, "holds a name that is not a string"),
        ({"__qw__": '{"v": true}'}, "not an object with a version"),
    ],
)
def test_a_hash_that_decodes_into_something_not_storable_again_is_invalid(
    fields: dict[str, str], why: str
) -> None:
    # Everything decoded must encode again (into the failed registry, say): what would not
    # is refused at once, so such a job is failed as invalid instead of wedging its worker.
    with pytest.raises(InvalidJob, match=why):
        codec.decode_job("j", fields)
