"""How a job is stored in Redis (``job:<id>`` and ``qw:job:<id>``), and how failed jobs are recorded.

The original qw stored one hash field per top-level key of the job data and handed the
hash back as it came out of ``HGETALL``: only a flat map of strings survived the trip.
qw keeps that hash exactly as the original did, and keeps everything of its own in a key
beside it, so an original reader (a 2014 worker running beside qw's during a migration)
sees a job's data and nothing else.

The encoding (version 2)
------------------------

**A job qw writes** is two keys, written, read and deleted together by the same scripts:

* ``job:<id>``, a hash: the data, one field per top-level key, when the data is a ``dict``
  whose keys are strings and none starts with ``__qw``. String values are stored as they
  are (``HGETALL`` and an original reader see natural strings, exactly what the original
  ``Client.queue_job`` wrote); any other value is stored as JSON text. ``{"n": 7, "name":
  "x"}`` becomes ``n = 7``, ``name = x``. An empty dict leaves no hash (Redis has no empty
  hashes): an original reader sees ``{}``. Anything else (a list, a scalar, ``null``, a
  dict with a reserved key), which the original could not carry, is stored whole as JSON
  text in the single field ``__qw_data__``: that is what an original reader sees.
* ``qw:job:<id>``, a string: the *marker*, a compact JSON object:

==============  =========================================================================
``v``           encoding version (``2``); a reader refuses a newer one as invalid
``keys``        every data field's name, in the data's order (Redis forgets the order of
                a hash's fields once it grows, and a field missing from the hash makes
                the job unreadable rather than run with less data); omitted when the
                data is in ``__qw_data__``
``json``        names of the fields whose values are JSON text (omitted when none)
``manager``     the manager the job was queued for (omitted when none)
``worker``      the worker the job was queued for (omitted when none)
``queue``       the named queue the job was queued on (omitted for the shared queue)
``attempts``    runs that already failed and were retried (omitted when 0)
``queued_at``   when it was queued, seconds since the epoch (omitted when unknown)
``meta``        framework metadata travelling with the job (omitted when empty)
==============  =========================================================================

**Version 1** (qw before 1.0) kept the marker in the hash itself, as a field ``__qw__``
(the same object, without ``keys`` when one field or none). Such jobs, queued before an
upgrade, are read as they are, for as long as they wait (this version reads both; it
writes only version 2), and so are the hashes of unreadable jobs that qw keeps in its
failed registry (``qw:invalid:<id>``), which keep their marker that way.

**A hash without a marker** (no ``qw:job:<id>``, no ``__qw__`` field) was written by hand
or by the original qw. Its fields reach the target exactly as stored, a ``dict`` of
``str`` to ``str`` (``{"n": "7"}`` stays ``{"n": "7"}``). Job metadata comes from the
queue the job was taken from.

**Unreadable jobs** are refused (:class:`~qw_core.errors.InvalidJob`), never handed to a
target with data it was not queued with: a missing hash without a marker (the original
client could not queue empty data, so an id without its hash is one queued twice, or
whose data was deleted), a field the marker lists that the hash lacks, and a field name
or value that is not UTF-8 text (it reaches this module as lone surrogates, see
:mod:`qw_redis.connection`).

Any JSON value round-trips exactly: nested values, unicode (stored as UTF-8, not
escaped), integers of any size, floats (shortest repr, so ``0.1`` stays ``0.1``), booleans
and ``null``. Values that JSON would change on the way are refused with
:class:`~qw_core.errors.InvalidJob` before anything is written: NaN and infinities,
tuples, sets, non-string mapping keys, lone surrogates.

**Size.** The encoded size of a job is the sum of the UTF-8 lengths of its hash's field
names and values and of its marker. :func:`encode_job` refuses a job over the broker's
limit (default 512 KiB) with :class:`~qw_core.errors.JobTooLarge`; ``take.lua`` measures
stored jobs the same way (in Lua, over the replies it builds anyway, so the data of an
oversized job never crosses the network) and the broker moves such a job to the failed
registry.

Failed jobs (``qw:failed:<id>``) keep the job as a JSON *record* (``id``, ``data``,
``manager``, ``worker``, ``attempts``, ``queued_at``, ``meta``) and the failure as the JSON
of :class:`~qw_core.models.Failure`'s fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

from qw_core import encoding
from qw_core.errors import InvalidJob, JobTooLarge
from qw_core.models import JSON, Job

#: The field that held the marker inside the hash in version 1 (read, never written).
MARKER = "__qw__"
#: The field holding the whole data as JSON when it is not a plain mapping.
DATA_FIELD = "__qw_data__"
#: Data keys starting with this are reserved: such data is stored whole in ``DATA_FIELD``.
RESERVED_PREFIX = "__qw"
#: The encoding version written by this module (it reads this one and the ones before).
VERSION = 2
#: Default limit on a job hash's encoded size, in bytes.
DEFAULT_MAX_JOB_SIZE = 512 * 1024
#: How a user raises it: a parameter of the Redis URL, for producers and workers alike.
RAISE_LIMIT_HINT = "raise it with ?max_job_size=BYTES in the Redis URL, where jobs are queued and run"


#: Built once: ``json.dumps`` with non-default options builds a new encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_dumps = _ENCODER.encode


def _checked_dumps() -> Callable[[object], str]:
    """``_dumps`` for values already known to be JSON, without its per-call set-up.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which costs more than
    encoding a job's small ``__qw__`` marker. This one is built once, without the
    circular-reference check (the marker holds only values :func:`to_json` has
    checked). Where the C encoder is missing or differs, it is ``_dumps`` itself.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _dumps
    try:
        # (markers, default, encoder, indent, key_sep, item_sep, sort_keys, skipkeys, allow_nan)
        quote = json.encoder.encode_basestring
        encoder = make(None, _ENCODER.default, quote, None, ":", ",", False, False, False)

        def dumps(value: object) -> str:
            return "".join(encoder(value, 0))

        sample = {"v": 1, "json": ["n", "é"], "queued_at": 0.1, "meta": {"a": [None, True, 2**70]}}
        if dumps(sample) == _dumps(sample):
            return dumps
    except (TypeError, ValueError):
        pass
    return _dumps


_dumps_checked = _checked_dumps()
#: The same, for the scripts' JSON arguments (lists of job ids, field names and values,
#: markers: text, and numbers qw wrote): built once, not per call.
dumps_known = _dumps_checked


def to_json(value: object, what: str) -> str:
    """``value`` as compact JSON text, refusing anything that would not come back equal.

    :raises InvalidJob: ``value`` is not JSON (the message says where and why).
    """
    try:
        text = _dumps(value)
        same = _plain(value) or json.loads(text) == value  # the round trip only when in doubt
    except RecursionError:  # the C encoder goes deeper than _plain: either may say so
        raise InvalidJob(f"{what} is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"{what} is not JSON: {exc}") from exc
    if not same:
        raise InvalidJob(f"{what} is not JSON: {_why_not_json(value)}")
    return text


def _plain(value: object) -> bool:
    """True if ``value`` is built of exactly dict, list, str, int, float, bool and None.

    Such a value survives JSON unchanged (floats are finite once ``_dumps`` accepted
    them), so :func:`to_json` can skip its round trip; subclasses and tuples cannot.
    """
    kind = type(value)
    if kind is list:
        return all(map(_plain, cast("list[object]", value)))
    if kind is dict:
        mapping = cast("dict[object, object]", value)
        return all(type(key) is str for key in mapping) and all(map(_plain, mapping.values()))
    return kind is str or kind is int or kind is float or kind is bool or value is None


def _why_not_json(value: object, path: str = "") -> str:
    """Describe the first part of ``value`` that JSON would change."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"key {key!r} at {path or 'top level'} is a {type(key).__name__}, not a string"
            reason = _why_not_json(item, f"{path}[{key!r}]")
            if reason:
                return reason
    elif isinstance(value, list):
        for index, item in enumerate(value):
            reason = _why_not_json(item, f"{path}[{index}]")
            if reason:
                return reason
    elif not isinstance(value, (str, int, float, type(None))):
        return f"{type(value).__name__} at {path or 'top level'} would not come back as itself"
    return ""


def _is_field_map(data: JSON) -> bool:
    """True if ``data`` is stored one field per key (a dict of plain, unreserved keys)."""
    if not isinstance(data, dict):
        return False
    return all(isinstance(key, str) and not key.startswith(RESERVED_PREFIX) for key in data)


def hash_size(fields: Mapping[str, str]) -> int:
    """The encoded size of a hash: the UTF-8 lengths of its field names and values.

    :raises InvalidJob: a name or value is not encodable as UTF-8 (a lone surrogate).
    """
    try:
        # str.isascii() is O(1) in CPython, so plain ASCII text is never copied here.
        size = 0
        for name, value in fields.items():
            size += len(name) if name.isascii() else len(name.encode())
            size += len(value) if value.isascii() else len(value.encode())
        return size
    except UnicodeEncodeError as exc:
        raise InvalidJob(f"job data is not valid unicode text: {exc.reason} at {exc.object[:40]!r}") from exc


def _scalar_json(value: object) -> str | None:
    """The JSON text of an int, bool, finite float or None, as json.dumps writes it.

    The common values skip :func:`to_json`'s round trip; ``None`` means "not one of those".
    """
    kind = type(value)
    if kind is int:
        try:
            return int.__repr__(cast("int", value))
        except ValueError:  # more digits than Python writes: to_json says so
            return None
    if kind is bool:
        return "true" if value else "false"
    if kind is float and math.isfinite(cast("float", value)):
        return float.__repr__(cast("float", value))
    return "null" if value is None else None


def _add_metadata(marker: dict[str, Any], job: Job) -> None:
    """Put ``job``'s metadata in ``marker``, defaults left out."""
    if job.manager is not None:
        marker["manager"] = job.manager
    if job.worker is not None:
        marker["worker"] = job.worker
    if job.queue is not None:
        marker["queue"] = job.queue
    if job.attempts:
        marker["attempts"] = job.attempts
    if job.queued_at is not None:
        marker["queued_at"] = job.queued_at
    if job.meta:
        marker["meta"] = dict(job.meta)


class Stored(NamedTuple):
    """A job as it is stored: its ``job:<id>`` hash fields and its ``qw:job:<id>`` marker.
    (A named tuple: one is made per job queued, on the bulk path.)"""

    fields: dict[str, str]
    marker: str

    def size(self) -> int:
        """The encoded size: the hash's names and values, and the marker, in UTF-8 bytes."""
        marker = self.marker
        return hash_size(self.fields) + (len(marker) if marker.isascii() else len(marker.encode()))


def encode_job(job: Job, *, max_size: int = DEFAULT_MAX_JOB_SIZE) -> Stored:
    """The hash fields and the marker that store ``job``.

    :param max_size: refuse a job larger than this many bytes (``0``: no limit).
    :raises InvalidJob: the data or meta is not JSON.
    :raises JobTooLarge: the encoded job is over ``max_size``.
    """
    if not isinstance(job.id, str) or not job.id:
        raise InvalidJob(f"a job id must be a non-empty string, not {job.id!r}")
    fields: dict[str, str] = {}
    marker: dict[str, Any] = {"v": VERSION}
    data = job.data
    if _is_field_map(data):
        json_fields = []
        for key, value in cast("dict[str, JSON]", data).items():
            if isinstance(value, str):
                fields[key] = value
                continue
            text = _scalar_json(value)
            fields[key] = to_json(value, f"job data[{key!r}]") if text is None else text
            json_fields.append(key)
        marker["keys"] = list(fields)  # the order (Redis keeps it only while a hash is small)
        if json_fields:
            marker["json"] = json_fields
    else:
        fields[DATA_FIELD] = to_json(data, "job data")
    if job.meta:
        to_json(dict(job.meta), "job meta")  # checked here; the marker's other parts are safe
    _add_metadata(marker, job)
    try:
        stored = Stored(fields, _dumps_checked(marker))
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"job {job.id} metadata is not JSON: {exc}") from exc
    size = stored.size()
    if max_size and size > max_size:
        raise JobTooLarge(
            f"job {job.id} encodes to {size} bytes; the limit is {max_size} ({RAISE_LIMIT_HINT})",
            job_id=job.id,
            size=size,
            limit=max_size,
            hint=RAISE_LIMIT_HINT,
        )
    return stored


def check_new_id(job_id: str) -> str:
    """Return ``job_id`` if it may name a new job: unicode text (an id read back from Redis
    may hold undecodable bytes, as lone surrogates, and is used as it is).

    :raises InvalidJob: it holds lone surrogates.
    """
    if not job_id.isascii():
        try:
            job_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJob(f"job id {shown(job_id)!r} is not valid unicode text") from None
    return job_id


def decode_job(
    job_id: str,
    fields: Mapping[str, str],
    marker_text: str | None = None,
    *,
    manager: str | None = None,
    worker: str | None = None,
    queue: str | None = None,
) -> Job:
    """The job stored in ``fields`` (an ``HGETALL`` reply, ``{}`` for a missing hash) and
    ``marker_text`` (its ``qw:job:<id>``, ``None`` when there is none).

    :param manager: the manager queue the job was taken from, for a hash without marker.
    :param worker: the worker it was queued on directly, for a hash without marker.
    :param queue: the named queue it was taken from, for a hash without marker.
    :raises InvalidJob: the job is missing, holds bytes that are not UTF-8 text, or has
        a marker but cannot be decoded.
    """
    if marker_text is None:
        if not fields:
            raise InvalidJob(
                f"job {shown(job_id)} has no data: job:{shown(job_id)} does not exist (the id was "
                "queued twice, or its hash was deleted)"
            )
        marker_text = fields.get(MARKER)  # version 1 kept it in the hash
    _check_text(job_id, fields)
    if marker_text is None:
        return Job(id=job_id, data=dict(fields), manager=manager, worker=worker, queue=queue)
    try:
        marker = _marker(marker_text)
        data: JSON = (
            encoding.loads_strict(fields[DATA_FIELD]) if DATA_FIELD in fields else _field_map(marker, fields)
        )
        return Job(
            id=job_id,
            data=data,
            manager=marker.get("manager"),
            worker=marker.get("worker"),
            queue=marker.get("queue"),
            attempts=marker.get("attempts", 0),
            queued_at=marker.get("queued_at"),
            meta=marker.get("meta", {}),
        )
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidJob(f"job {shown(job_id)} cannot be decoded: {exc}") from exc


#: The marker's optional fields and the types they must have.
_MARKER_TYPES: dict[str, tuple[type, ...]] = {
    "json": (list,),
    "keys": (list,),
    "manager": (str, type(None)),
    "worker": (str, type(None)),
    "queue": (str, type(None)),
    "attempts": (int,),
    "queued_at": (int, float, type(None)),
    "meta": (dict,),
}


def _marker(text: str) -> dict[str, Any]:
    """A job's marker, checked field by field (those it has: usually two or three).

    :raises ValueError: it is not a marker this version can read.
    """
    marker = encoding.loads_strict(text)
    if not isinstance(marker, dict) or type(marker.get("v")) is not int:
        raise ValueError("the marker is not an object with a version")
    if marker["v"] > VERSION:
        raise ValueError(f"written with encoding version {marker['v']}, newer than this qw ({VERSION})")
    for name, value in marker.items():
        kinds = _MARKER_TYPES.get(name)
        if kinds is None:
            continue
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise ValueError(f"the marker's {name!r} has the wrong type ({type(value).__name__})")
        if isinstance(value, list) and not all(isinstance(key, str) for key in value):  # json, keys
            raise ValueError(f"the marker's {name!r} holds a name that is not a string")
    if marker.get("attempts", 0) < 0:
        raise ValueError("the marker's 'attempts' is negative")
    return marker


def shown(text: str) -> str:
    """``text`` as it can be printed: bytes that were not UTF-8 (lone surrogates, see
    :mod:`qw_redis.connection`) appear as ``\\xNN`` escapes."""
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no undecodable byte makes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_text(job_id: str, fields: Mapping[str, str]) -> None:
    """Refuse a hash whose field names or values hold bytes that are not UTF-8 text.

    :raises InvalidJob: naming the first such field.
    """
    for name, value in fields.items():
        if name.isascii() and value.isascii():  # O(1) in CPython: the common case costs nothing
            continue
        for what, text in (("field name", name), (f"value of field {shown(name)}", value)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidJob(
                    f"job {shown(job_id)}: the {what} is not UTF-8 text: {shown(text)[:60]}"
                ) from None


def _field_map(marker: dict[str, Any], fields: Mapping[str, str]) -> dict[str, JSON]:
    """The data of a hash stored one field per key, in the order the marker recorded.

    :raises ValueError: a field the (version 2) marker lists is missing from the hash.
    """
    json_fields = set(marker.get("json", ()))
    if marker["v"] >= 2:
        missing = [key for key in marker.get("keys", ()) if key not in fields]
        if missing:
            raise ValueError(f"its hash lacks the field {shown(missing[0])!r} (of {len(missing)} missing)")
    order = [key for key in marker.get("keys", ()) if key in fields]
    seen = set(order)
    order += [key for key in fields if key != MARKER and key not in seen]  # fields added by hand
    return {key: encoding.loads_strict(fields[key]) if key in json_fields else fields[key] for key in order}


# -- the failed-job registry ------------------------------------------------------------------


#: The failed registry's records, in the encoding every backend shares (unknown keys
#: ignored when read): the job as it last ran, and why it failed.
encode_record = encoding.encode_job
decode_record = encoding.decode_job
encode_failure = encoding.encode_failure
decode_failure = encoding.decode_failure
