"""Jobs and failures as JSON objects: one encoding, and one rule for reading them back.

Every place that keeps a whole job or a failure as one JSON object goes through here: the
memory broker's store and the socket its worker processes use (:mod:`qw_core.memory`,
:mod:`qw_core.memory_rpc`), the Redis failed registry's records (``qw_redis.codec``) and
the PostgreSQL failure column (``qw_postgres.codec``). Written twice, the two copies had
drifted (one ignored unknown keys, one raised); written once, they cannot.

**Writing is strict.** A value that would not come back equal (a tuple, an integer key,
NaN, a set, an object) is refused with :class:`~qw_core.errors.InvalidJob` before anything
is written, as a networked backend must refuse it, so the in-memory backend catches it in
tests too.

**Reading is lenient, by one rule:** keys a reader does not know are ignored (a newer qw
wrote them, during a rolling upgrade), and a key that is missing takes the model's default
(an older qw did not write it). Only what the model cannot do without is required: a job's
``id``, a failure's ``exc_type`` and ``message``.

The Redis job hash (``job:<id>``) has an encoding of its own, compatible with the
original qw (``qw_redis.codec``); this module is for the records beside it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import attrs

from qw_core.errors import InvalidJob
from qw_core.models import Failure, Job

#: Built once: ``json.dumps`` with non-default options builds a new encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond the largest float")
    return value


#: Built once (``json.loads`` with an option builds a decoder per call, on the hot path).
_STRICT = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads_strict(text: str | bytes) -> Any:
    """The JSON value ``text`` holds, read as strictly as :func:`dumps` writes: ``NaN`` and
    ``Infinity`` (which Python's json reads) and numbers beyond the largest float (``1e400``,
    valid JSON, read as infinity) are refused, so whatever is read can be written again
    (into a failed registry, say) and a job never runs with a value it was not queued with.

    :raises ValueError: ``text`` is not such JSON (``RecursionError`` if nested too deep).
    """
    return _STRICT.decode(text.decode() if isinstance(text, bytes) else text)


#: The fields of a job that are stored (``suspect`` is not: a broker sets it on a take).
JOB_FIELDS = ("id", "data", "manager", "worker", "queue", "attempts", "queued_at", "meta")
#: The fields of a failure.
FAILURE_FIELDS = tuple(field.name for field in attrs.fields(Failure))


def check_json(value: object, where: str = "data") -> None:
    """Raise :class:`InvalidJob` unless ``value`` survives a JSON round trip unchanged.

    ``json.dumps`` alone is not strict enough: it turns tuples into lists and integer
    keys into strings, so a job would come back different from what was queued.

    :param where: how the message names ``value`` (``data``, ``meta``).
    """
    try:
        _check_json(value, where)
    except RecursionError:
        raise InvalidJob(f"{where} is nested too deeply (or contains itself)") from None


#: Python writes an int of up to 640 digits as text whatever its
#: ``sys.set_int_max_str_digits`` limit says; one this many bits long has fewer digits.
_ALWAYS_WRITTEN_BITS = 2000


def int_fits_json(value: int) -> bool:
    """Whether Python writes ``value`` as JSON text: not one over its limit of digits for
    converting an int to text (4300 by default), which ``json.dumps`` raises ValueError for."""
    if value.bit_length() <= _ALWAYS_WRITTEN_BITS:
        return True
    try:
        str(value)
    except ValueError:
        return False
    return True


def _check_json(value: object, path: str) -> None:
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if not int_fits_json(value):
            raise InvalidJob(f"{path} holds an int too long to write as text ({value.bit_length()} bits)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidJob(f"{path} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidJob(f"{path} has the key {key!r}; JSON object keys are strings")
            _check_json(item, f"{path}[{key!r}]")
        return
    raise InvalidJob(f"{path} holds a {type(value).__qualname__}, which is not a JSON value")


def dumps(value: object) -> str:
    """Compact JSON text (UTF-8 as is, no ``\\u`` escapes); NaN and infinities are refused,
    as JSON has no spelling for them. For values already checked (:func:`check_json`)."""
    return _ENCODER.encode(value)


def loads_object(text: str | bytes, what: str) -> dict[str, Any]:
    """The JSON object ``text`` holds.

    :raises InvalidJob: it is not JSON, or not an object (written by hand, not by qw).
    """
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise InvalidJob(f"{what} is not JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise InvalidJob(f"{what} is not a JSON object")
    return loaded


def _known(names: tuple[str, ...], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``raw`` that name a field (the rule for unknown and missing keys)."""
    return {name: raw[name] for name in names if name in raw}


# -- jobs --------------------------------------------------------------------------------


def job_to_dict(job: Job) -> dict[str, Any]:
    """``job`` as a plain JSON-ready dict, after checking that it is one.

    :raises InvalidJob: the id is not a non-empty string, or data or meta is not JSON.
    """
    if not isinstance(job.id, str) or not job.id:
        raise InvalidJob(f"a job id must be a non-empty string, not {job.id!r}")
    check_json(job.data, "data")
    meta = dict(job.meta)
    check_json(meta, "meta")
    return {
        "id": job.id,
        "data": job.data,
        "manager": job.manager,
        "worker": job.worker,
        "queue": job.queue,
        "attempts": job.attempts,
        "queued_at": job.queued_at,
        "meta": meta,
    }


def job_from_dict(raw: Mapping[str, Any]) -> Job:
    """The :class:`Job` that :func:`job_to_dict` encoded (unknown keys ignored, missing
    ones defaulted).

    :raises InvalidJob: it has no ``id``.
    """
    if "id" not in raw:
        raise InvalidJob(f"a stored job has no id (keys: {', '.join(sorted(raw)) or 'none'})")
    return Job(**_known(JOB_FIELDS, raw))


def encode_job(job: Job) -> str:
    """``job`` as one JSON object (see :func:`job_to_dict`).

    :raises InvalidJob: as :func:`job_to_dict`.
    """
    return dumps(job_to_dict(job))


def decode_job(text: str | bytes) -> Job:
    """The job :func:`encode_job` wrote.

    :raises InvalidJob: the text is not a JSON object with an ``id``.
    """
    return job_from_dict(loads_object(text, "a stored job"))


# -- failures ----------------------------------------------------------------------------


def failure_to_dict(failure: Failure) -> dict[str, Any]:
    """``failure`` as a plain JSON-ready dict.

    :raises InvalidJob: a field is not JSON (a failure built by hand with odd values).
    """
    fields = attrs.asdict(failure)
    check_json(fields, "the failure")
    return fields


def failure_from_dict(raw: Mapping[str, Any]) -> Failure:
    """The :class:`Failure` that :func:`failure_to_dict` encoded (unknown keys ignored,
    missing ones defaulted).

    :raises InvalidJob: it lacks ``exc_type`` or ``message``.
    """
    missing = [name for name in ("exc_type", "message") if name not in raw]
    if missing:
        raise InvalidJob(f"a stored failure has no {' or '.join(missing)}")
    return Failure(**_known(FAILURE_FIELDS, raw))


def encode_failure(failure: Failure) -> str:
    """``failure`` as one JSON object."""
    return dumps(failure_to_dict(failure))


def decode_failure(text: str | bytes) -> Failure:
    """The failure :func:`encode_failure` wrote.

    :raises InvalidJob: the text is not a JSON object with ``exc_type`` and ``message``.
    """
    return failure_from_dict(loads_object(text, "a stored failure"))
