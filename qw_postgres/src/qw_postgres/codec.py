"""Jobs and failures as rows: the JSON text of their data, checked before it is written.

A job's data and meta are stored as the exact JSON text qw encoded, in ``json`` columns
(which keep the text as written, key order and number spelling included, unlike
``jsonb``), so a program may read ``data->>'image'`` in SQL and a job comes back equal
to the one queued. Values JSON would change (a tuple, an integer key, NaN, a set) are
refused before anything is written, as every backend does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from qw_core.encoding import check_json, failure_from_dict, failure_to_dict, loads_object, loads_strict
from qw_core.errors import InvalidJob
from qw_core.models import FailedJob, Failure, Job

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def to_json(value: object, where: str) -> str:
    """``value`` as compact JSON text, after checking it survives a round trip.

    :raises InvalidJob: it is not JSON, or holds text that is not UTF-8 (a lone surrogate).
    """
    check_json(value, where)
    text = _ENCODER.encode(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidJob(f"{where} holds text that is not UTF-8 ({exc.reason})") from None
    return text


@attrs.frozen
class Row:
    """The columns of a job about to be written."""

    id: str
    data: str
    meta: str
    manager: str | None
    worker: str | None
    queue: str | None
    attempts: int
    queued_at: float | None


def encode(job: Job) -> Row:
    """The row of ``job``.

    :raises InvalidJob: its id is not a non-empty string, or its data or meta is not JSON.
    """
    if not isinstance(job.id, str) or not job.id:
        raise InvalidJob(f"a job id must be a non-empty string, not {job.id!r}")
    if "\x00" in job.id:
        raise InvalidJob("a job id cannot contain a NUL character")
    to_json(job.id, "the job id")
    return Row(
        id=job.id,
        data=to_json(job.data, "data"),
        meta=to_json(dict(job.meta), "meta"),
        manager=job.manager,
        worker=job.worker,
        queue=job.queue,
        attempts=job.attempts,
        queued_at=job.queued_at,
    )


def columns(rows: Sequence[Row]) -> dict[str, list[Any]]:
    """The rows as one list per column (for ``unnest``)."""
    return {field.name: [getattr(row, field.name) for row in rows] for field in attrs.fields(Row)}


def decode(  # noqa: PLR0917 - the columns of a row, in order
    job_id: str,
    data: str,
    meta: str,
    manager: str | None,
    worker: str | None,
    queue: str | None,
    attempts: int,
    queued_at: float | None,
    *,
    suspect: bool = False,
) -> Job:
    """The job stored in these columns.

    :raises InvalidJob: the text is not JSON Python reads back as it was (written by hand,
        not by qw: nested too deeply, an integer too long, a number beyond the largest
        float), or meta is not an object.
    """
    try:
        loaded_meta = loads_strict(meta)
        loaded = loads_strict(data)
    except ValueError as exc:
        raise InvalidJob(f"job {job_id}: its stored data is not JSON ({exc})") from None
    except RecursionError:  # valid JSON to the server, nested too deep for Python's parser
        raise InvalidJob(f"job {job_id}: its stored data is nested too deeply to read") from None
    if not isinstance(loaded_meta, dict):
        raise InvalidJob(f"job {job_id}: its stored meta is not a JSON object")
    return Job(
        id=job_id,
        data=loaded,
        manager=manager,
        worker=worker,
        queue=queue,
        attempts=attempts,
        queued_at=queued_at,
        meta=loaded_meta,
        suspect=suspect,
    )


def encode_failure(failure: Failure) -> str:
    """``failure`` as JSON text, without its time (the database stamps its own)."""
    fields = failure_to_dict(failure)
    del fields["failed_at"]
    return to_json(fields, "the failure")


def decode_kept(row: Sequence[Any]) -> Job:
    """The job of a failed-registry row (its eight columns), shown with no data (and no
    meta) if its stored text is unreadable: a job failed as ``invalid`` keeps the text it
    was written with, so that a requeue once it is mended runs it with that data."""
    try:
        return decode(*row[:8])
    except InvalidJob:
        job_id, _, _, manager, worker, queue, attempts, queued_at = row[:8]
        return Job(
            id=job_id,
            data=None,
            manager=manager,
            worker=worker,
            queue=queue,
            attempts=attempts or 0,
            queued_at=queued_at,
        )


def decode_failed(row: Sequence[Any]) -> FailedJob:
    """A failed-registry row: the job's eight columns, the failure's JSON, its time."""
    job = decode_kept(row)
    raw = loads_object(row[8], f"job {job.id}'s failure")
    return FailedJob(job=job, failure=failure_from_dict({**raw, "failed_at": float(row[9])}))


#: The columns :func:`decode` reads, in its order.
JOB_COLUMNS = "id, data::text, meta::text, manager, worker, queue, attempts, queued_at"
