"""What a job returned: the one place that says how a target's return value is kept.

A target may return any JSON value. ``None`` (and returning nothing) keeps no value:
the job is only noted as finished (one write per take, for
:meth:`~qw_core.broker.Broker.job_status`), so jobs without a result cost about what they
did before results existed. Anything else
is encoded here, at the end of the run, strictly (no ``NaN``, no sets, no objects): a
value that is not JSON fails the job with :class:`~qw_core.errors.InvalidResult`, in the
worker, instead of being lost or mangled later. The broker keeps the encoded value for
the worker's ``result_ttl`` seconds (``qw run --result-ttl``), finishing the job and
storing its result in one atomic step (:meth:`~qw_core.broker.Broker.finish_with_result`),
and a producer reads it, or waits for it, with :meth:`~qw_core.broker.Broker.get_result`
and :meth:`~qw_core.broker.Broker.wait_result`.
"""

from __future__ import annotations

import json
import math

import attrs

from qw_core.errors import InvalidResult
from qw_core.models import JSON

#: How long a result is kept unless told otherwise, in seconds: long enough for a
#: producer waiting on it, short enough that results of a busy queue stay small.
DEFAULT_RESULT_TTL = 600.0
#: The largest result kept, in bytes of its JSON text (UTF-8): Redis refuses a longer
#: value (its ``proto-max-bulk-len``, 512 MiB by default) by closing the connection,
#: which a worker would take for an outage and retry for ever.
MAX_RESULT_SIZE = 512 * 1024 * 1024


@attrs.frozen(kw_only=True)
class JobResult:
    """A finished job's return value, as the broker keeps it.

    :param job_id: the job.
    :param value: what its target returned (never ``None``: that keeps nothing).
    :param finished_at: when it was stored (the backend's clock, seconds since the epoch).
    :param worker: the worker that ran it.
    """

    job_id: str
    value: JSON
    finished_at: float
    worker: str


def encode_value(value: object, job_id: str) -> str:
    """``value`` as the JSON text the broker keeps.

    :raises InvalidResult: ``value`` is not JSON (a set, ``NaN``, an object, a dict with
        keys that are not strings, text that is not Unicode such as a lone surrogate...),
        saying what to return instead; or its text is over :data:`MAX_RESULT_SIZE`.
    """
    try:
        _check_keys(value)
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        # ASCII (checked at no cost) is its own UTF-8; other text is encoded to be measured,
        # which also refuses a lone surrogate no backend can store.
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        what = f"{type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            what = repr(value)
        raise InvalidResult(
            f"job {job_id} returned {what}, which is not JSON ({exc}); return JSON data "
            "(dict, list, str, int, float, bool) or None, or keep the value yourself"
        ) from None
    if size > MAX_RESULT_SIZE:
        raise InvalidResult(
            f"job {job_id} returned {size} bytes of JSON, over the limit of {MAX_RESULT_SIZE} "
            "for a result; keep a large value elsewhere (a file, a database) and return where it is"
        )
    return text


def _check_keys(value: object) -> None:
    """Refuse a dict key that is not a string: ``json.dumps`` would turn ``{1: "a"}`` into
    ``{"1": "a"}``, and the result read back would not be what the target returned.

    :raises TypeError: naming the key.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"the key {key!r} is a {type(key).__name__}, and JSON keys are strings")
            _check_keys(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_keys(item)


def decode_value(text: str) -> JSON:
    """The value :func:`encode_value` encoded."""
    value: JSON = json.loads(text)
    return value


#: Most finished jobs a backend remembers (for :meth:`~qw_core.broker.Broker.job_status`)
#: after they returned nothing: the oldest are forgotten first, so memory stays bounded
#: however fast jobs finish (about 10 MB on Redis).
FINISHED_CAP = 100_000


def check_ttl(ttl: float) -> float:
    """``ttl`` if it can be a result's lifetime (0 keeps none).

    :raises ValueError: negative, or not a finite number.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl < 0:
        raise ValueError(f"a result's lifetime must be 0 or more seconds, not {ttl!r}")
    return float(ttl)
