"""The job encoding: the data hash and qw's marker beside it (no Redis needed, except the
fakeredis round trips), and reading jobs stored by qw before 1.0 (the marker in the hash)."""

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


def marker(stored: codec.Stored) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(stored.marker)
    return value


def decoded(stored: codec.Stored) -> Job:
    return codec.decode_job("j", stored.fields, stored.marker)


def version_1(stored: codec.Stored) -> dict[str, str]:
    """The hash qw before 1.0 wrote for the same job: its marker inside, as ``__qw__``."""
    old = {k: v for k, v in marker(stored).items() if k != "keys" or len(v) > 1}
    return {**stored.fields, codec.MARKER: json.dumps({**old, "v": 1})}


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
    ("fields", "marker_text"),
    [
        ({"n": "caf\udce9"}, None),
        ({"caf\udce9": "x"}, None),
        ({"__qw__": '{"v":1}', "n": "\udcff"}, None),
        ({"n": "\udcff"}, '{"v":2,"keys":["n"]}'),
    ],
    ids=["value", "field name", "version 1", "version 2"],
)
def test_bytes_that_are_not_utf8_make_a_job_invalid(fields: dict[str, str], marker_text: str | None) -> None:
    with pytest.raises(InvalidJob, match=r"not UTF-8 text: .*\\x"):
        codec.decode_job("id1", fields, marker_text)


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
    stored = codec.encode_job(Job(id="j", data={"name": "x", "n": 7, "ok": True, "l": [1, "a"]}))
    assert stored.fields == {"name": "x", "n": "7", "ok": "true", "l": '[1,"a"]'}
    assert marker(stored) == {"v": 2, "keys": ["name", "n", "ok", "l"], "json": ["n", "ok", "l"]}


def test_the_hash_holds_the_data_alone_as_the_original_client_wrote_it() -> None:
    # What qw 0.1.1's Client.queue_job wrote for string data: one field per key, nothing
    # else; an original reader running beside qw sees exactly its data.
    data = {"c": "x", "image": "cat.png", "size": "3"}
    stored = codec.encode_job(Job(id="j", data=data))
    assert stored.fields == data
    assert marker(stored) == {"v": 2, "keys": ["c", "image", "size"]}


def test_metadata_is_in_the_marker_and_defaults_are_left_out() -> None:
    job = Job(id="j", data={}, manager="m1", worker="m1.2", attempts=3, queued_at=12.5, meta={"t": [1]})
    stored = codec.encode_job(job)
    assert stored.fields == {}, "an empty dict leaves no hash"
    assert marker(stored) == {
        "v": 2,
        "keys": [],
        "manager": "m1",
        "worker": "m1.2",
        "attempts": 3,
        "queued_at": 12.5,
        "meta": {"t": [1]},
    }
    assert decoded(stored) == job


@pytest.mark.parametrize("data", [[1, 2], "text", 42, 1.5, True, None, {"__qwx": 1}, {"__qw__": "x"}])
def test_anything_but_a_plain_mapping_is_one_json_field(data: JSON) -> None:
    stored = codec.encode_job(Job(id="j", data=data))
    assert set(stored.fields) == {codec.DATA_FIELD}, "what an original reader sees: the JSON"
    assert json.loads(stored.fields[codec.DATA_FIELD]) == data
    assert "keys" not in marker(stored)
    assert decoded(stored).data == data
    assert type(decoded(stored).data) is type(data)


def test_unicode_is_stored_as_utf8_not_escaped() -> None:
    stored = codec.encode_job(Job(id="j", data={"s": "日本", "l": ["é"]}))
    assert stored.fields["s"] == "日本"
    assert stored.fields["l"] == '["é"]'


def test_field_order_survives_even_when_redis_forgets_it() -> None:
    data: JSON = {"b": 1, "a": "x", "c": [2]}
    stored = codec.encode_job(Job(id="j", data=data))
    shuffled = dict(reversed(list(stored.fields.items())))
    assert list(codec.decode_job("j", shuffled, stored.marker).data) == ["b", "a", "c"]  # type: ignore[arg-type]


def test_fields_added_by_hand_to_a_qw_hash_come_back_as_strings() -> None:
    stored = codec.encode_job(Job(id="j", data={"a": 1, "b": 2}))
    fields = {**stored.fields, "extra": "hand"}
    assert codec.decode_job("j", fields, stored.marker).data == {"a": 1, "b": 2, "extra": "hand"}


def test_a_field_the_marker_lists_that_the_hash_lost_makes_the_job_invalid() -> None:
    stored = codec.encode_job(Job(id="j", data={"a": 1, "b": 2}))
    with pytest.raises(InvalidJob, match="lacks the field 'b'"):
        codec.decode_job("j", {"a": "1"}, stored.marker)
    with pytest.raises(InvalidJob, match="lacks the field 'a'"):
        codec.decode_job("j", {}, stored.marker)


# -- jobs stored by qw before 1.0 (version 1: the marker inside the hash) ---------------


@pytest.mark.parametrize(
    "data",
    [{"n": "7"}, {"name": "x", "n": 7, "l": [1, "a"]}, {}, [1, 2], None, {"__qw__": "x"}],
    ids=["one string", "mixed", "empty", "list", "null", "reserved key"],
)
def test_a_job_stored_before_1_0_is_read_as_it_was_queued(data: JSON) -> None:
    job = Job(id="j", data=data, manager="m1", attempts=2, queued_at=5.0, meta={"k": 1})
    old = version_1(codec.encode_job(job))
    assert codec.MARKER in old
    assert codec.decode_job("j", old) == job
    assert codec.decode_job("j", old).data == data


def test_the_version_1_hash_written_before_1_0_is_still_read_exactly() -> None:
    # As qw 1.0.0.dev0 wrote {"n": "7"}, and {"b": 1, "a": "x"} with its field order.
    assert codec.decode_job("j", {"n": "7", "__qw__": '{"v":1}'}).data == {"n": "7"}
    fields = {"a": "x", "b": "1", "__qw__": '{"v":1,"json":["b"],"keys":["b","a"]}'}
    assert list(codec.decode_job("j", fields).data) == ["b", "a"]  # type: ignore[arg-type]


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
        ({"x": 10**5000}, r"job data\['x'\] is not JSON: Exceeds the limit"),  # was a bare ValueError
        ({"\ud800": "x"}, "unicode"),
    ],
)
def test_values_json_would_change_are_refused(data: Any, why: str) -> None:
    with pytest.raises(InvalidJob, match=why):
        codec.encode_job(Job(id="j", data=data))


@pytest.mark.parametrize("depth", [300, 500, 700, 900, 2000, 100_000])
def test_data_nested_however_deep_is_stored_or_refused_never_a_recursion_error(depth: int) -> None:
    """The C encoder takes deeper nesting than the Python check after it, which used to
    escape as a bare RecursionError (``qw enqueue`` said "unexpected RecursionError")."""
    data: list[Any] = []
    for _ in range(depth):
        data = [data]
    try:
        codec.encode_job(Job(id="j", data=data), max_size=0)
        outcome = "stored"
    except InvalidJob as exc:
        outcome = str(exc)
    assert outcome in ("stored", "job data is nested too deeply")


def test_non_json_meta_is_refused() -> None:
    with pytest.raises(InvalidJob, match="meta"):
        codec.encode_job(Job(id="j", data={}, meta={"x": math.nan}))


def test_an_empty_id_is_refused() -> None:
    with pytest.raises(InvalidJob, match="id"):
        codec.encode_job(Job(id="", data={}))


def test_size_limit_counts_utf8_bytes_of_names_values_and_the_marker() -> None:
    stored = codec.encode_job(Job(id="j", data={"s": "é" * 100}), max_size=0)
    size = stored.size()
    assert size == 1 + 200 + len('{"v":2,"keys":["s"]}')
    assert codec.encode_job(Job(id="j", data={"s": "é" * 100}), max_size=size) == stored
    with pytest.raises(JobTooLarge, match=f"{size} bytes; the limit is {size - 1}"):
        codec.encode_job(Job(id="j", data={"s": "é" * 100}), max_size=size - 1)


@pytest.mark.parametrize(
    "marker_text",
    ["not json", "[1]", '{"v": "1"}', '{"v": 3}', '{"v": 1, "json": ["n"]}', '{"v": 2, "json": ["n"]}'],
)
@pytest.mark.parametrize("where", ["beside the hash", "in the hash (version 1)"])
def test_an_undecodable_qw_job_is_invalid(marker_text: str, where: str) -> None:
    if where == "beside the hash":
        fields, beside = {"n": "not json either"}, marker_text
    else:
        fields, beside = {"n": "not json either", "__qw__": marker_text}, None
    with pytest.raises(InvalidJob, match="cannot be decoded"):
        codec.decode_job("j", fields, beside)


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
    assert_identical(decoded(codec.encode_job(job, max_size=0)).data, data)


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
        ({"__qw__": '{"v": 1, "json": ["n"]}', "n": "[1e400]"}, "1e400 is beyond the largest float"),
        ({"__qw__": '{"v": 1, "meta": {"timeout": -1e400}}'}, "-1e400 is beyond the largest float"),
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
