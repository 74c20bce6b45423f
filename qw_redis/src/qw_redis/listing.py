"""Listings and counts: the queues, held lists, delayed jobs and failed registry, for the
:class:`~qw_core.broker.Inspector` role of the Redis broker.

A listing reads at most :data:`READ_CHUNK` ids a command, so that no read of a long list
holds Redis (and every worker) up; a queue key of the wrong type reads as empty (and
:meth:`~qw_redis.inspecting.InspectorPart.problems` names it). One part of
:class:`~qw_redis.broker.RedisBroker`, over the connection of :mod:`qw_redis.base`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

import attrs
import redis

from qw_core.broker import check_listed, check_page
from qw_core.models import FailedJob
from qw_redis import codec, keys
from qw_redis.base import RedisBase, translated

#: Most ids one command of a listing reads (``LRANGE``, ``ZRANGE``, ``HMGET``): one
#: ``LRANGE all:jobs 0 -1`` of a million ids held Redis, and every worker, for 0.1 s.
READ_CHUNK = 1000


def _glob_escaped(text: str) -> str:
    """``text`` with Redis's glob characters escaped, for a ``MATCH`` that takes it literally."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _failed_job(record: str, failure: str, at: float | None) -> FailedJob:
    """A failed job as the registry keeps it, with the server's time of the failure (its
    score in ``qw:failed``) as ``failed_at``: the time every host agrees on."""
    why = codec.decode_failure(failure)
    if at is not None:
        why = attrs.evolve(why, failed_at=float(at))
    return FailedJob(job=codec.decode_record(record), failure=why)


class ListingPart(RedisBase):
    """The listings and counts of :class:`~qw_redis.broker.RedisBroker`."""

    @translated
    def queued_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.queued_job_ids`; :data:`READ_CHUNK` ids an ``LRANGE``."""
        check_page(offset, limit)
        # Producers LPUSH and takers pop from the right: the next to run is the last, and
        # position p (from the next to run) is index -(p + 1).
        return self._range(
            self._keys.queue_list(self._listed(manager, queue)), offset, limit, from_right=True
        )

    @translated
    def queued_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        return self._llen(self._keys.queue_list(self._listed(manager, queue)))

    def _listed(self, manager: str | None, queue: str | None) -> str:
        """The origin of the queue a listing asks for (see :func:`check_listed`)."""
        manager, queue = check_listed(manager, queue)
        for name in (manager, queue):
            if name is not None:
                self._check_cached(name)
        return keys.origin(manager=manager, queue=queue)

    @translated
    def held_count(self, worker: str) -> int:
        return self._llen(self._keys.queue(worker))

    def _llen(self, key: str) -> int:
        """The length of list ``key``; ``0`` if it is not a list (:meth:`problems` says so)."""
        return self._wrong_type_as_empty(self._client.llen, key)

    @staticmethod
    def _wrong_type_as_empty(count: Callable[[str], Any], key: str) -> int:
        """``count(key)``, or ``0`` for a key of another type (:meth:`problems` says so)."""
        try:
            return int(count(key))
        except redis.ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                return 0
            raise

    @translated
    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        """Ids on ``<worker>:jobs`` as stored: sent directly (newest first), then held in take order."""
        check_page(offset, limit)
        return self._range(self._keys.queue(worker), offset, limit, from_right=False)

    def _range(self, key: str, offset: int, limit: int | None, *, from_right: bool) -> list[str]:
        """``limit`` ids (``None``: to the end) of list ``key`` from position ``offset`` on,
        counted from its right end (``from_right``) or its left: never one ``LRANGE`` over
        a list of unknown length."""

        def read(position: int, count: int) -> list[str]:
            if from_right:
                chunk = cast("list[str]", self._client.lrange(key, -(position + count), -(position + 1)))
                chunk.reverse()
                return chunk
            return cast("list[str]", self._client.lrange(key, position, position + count - 1))

        return self._read_in_chunks(read, offset, limit)

    @staticmethod
    def _read_in_chunks(read: Callable[[int, int], list[str]], offset: int, limit: int | None) -> list[str]:
        """``limit`` ids (``None``: to the end) from position ``offset`` on, through
        ``read(position, count)`` calls of at most :data:`READ_CHUNK` ids each."""
        found: list[str] = []
        position = offset
        while limit is None or len(found) < limit:
            want = READ_CHUNK if limit is None else min(READ_CHUNK, limit - len(found))
            chunk = read(position, want)
            found += chunk
            if len(chunk) < want:
                break
            position += want
        return found

    @translated
    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        """See :meth:`Broker.failed_jobs`; :data:`READ_CHUNK` entries a ``ZREVRANGE`` (and
        a pipeline of their records)."""
        return self._failed_range(0, limit)

    @translated
    def failed_jobs_page(self, *, offset: int = 0, limit: int = 100) -> list[FailedJob]:
        """See :meth:`Broker.failed_jobs_page`: ``ZREVRANGE`` from ``offset``, as :meth:`failed_jobs`."""
        check_page(offset, limit)
        return self._failed_range(offset, limit)

    def _failed_range(self, offset: int, limit: int) -> list[FailedJob]:
        """The ``limit`` entries of the registry from position ``offset`` on, newest first,
        :data:`READ_CHUNK` a ``ZREVRANGE`` (and a pipeline of their records); an entry whose
        record is gone is left out."""
        failed: list[FailedJob] = []
        start, end = offset, offset + max(0, limit)
        while start < end:
            want = min(READ_CHUNK, end - start)
            scored = cast(
                "list[tuple[str, float]]",
                self._client.zrevrange(self._keys.FAILED, start, start + want - 1, withscores=True),
            )
            pipe = self._client.pipeline(transaction=False)
            for job_id, _ in scored:
                pipe.hmget(self._keys.failed_job(job_id), ["job", "failure"])
            for (_, at), (record, failure) in zip(scored, pipe.execute(), strict=True):
                if record is not None and failure is not None:
                    failed.append(_failed_job(record, failure, at))
            if len(scored) < want:
                break
            start += want
        return failed

    @translated
    def delayed_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.delayed_job_ids`: ``qw:delayed:<m>`` by due time, :data:`READ_CHUNK`
        ids a ``ZRANGE`` (not yet the jobs qw delayed before 1.0, which a worker's next take
        sorts in there)."""
        check_page(offset, limit)
        key = self._keys.delayed(self._listed(manager, queue))
        return self._read_in_chunks(
            lambda start, count: cast("list[str]", self._client.zrange(key, start, start + count - 1)),
            offset,
            limit,
        )

    @translated
    def delayed_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        """``ZCARD qw:delayed:<m>``: one command, however many jobs are delayed for any queue."""
        return self._wrong_type_as_empty(self._client.zcard, self._keys.delayed(self._listed(manager, queue)))

    @translated
    def failed_count(self) -> int:
        return int(self._client.zcard(self._keys.FAILED))

    @translated
    def job_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """See :meth:`Broker.job_ids_with_prefix`: ``SCAN`` for the markers, the hashes (a
        job queued by the original client has no marker), the failed entries and the
        results whose id starts so, :data:`READ_CHUNK` keys a step; then ``ZSCAN`` for the
        jobs noted as finished lately."""
        found: dict[str, None] = {}
        escaped = _glob_escaped(prefix)
        for key_of in (self._keys.job_marker, self._keys.job, self._keys.failed_job, self._keys.result):
            head = key_of("")
            for key in self._client.scan_iter(match=head + escaped + "*", count=READ_CHUNK):
                found[key[len(head) :]] = None
                if len(found) >= limit:
                    return list(found)
        if self._client.type(self._keys.FINISHED) == "zset":
            for job_id, _ in self._client.zscan_iter(
                self._keys.FINISHED, match=escaped + "*", count=READ_CHUNK
            ):
                found[job_id] = None
                if len(found) >= limit:
                    break
        return list(found)

    @translated
    def failed_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """See :meth:`Broker.failed_ids_with_prefix`: ``ZSCAN qw:failed MATCH <prefix>*``,
        :data:`READ_CHUNK` entries a step."""
        pattern = _glob_escaped(prefix) + "*"
        found: list[str] = []
        for job_id, _ in self._client.zscan_iter(self._keys.FAILED, match=pattern, count=READ_CHUNK):
            if len(found) >= limit:
                break
            found.append(job_id)
        return found

    @translated
    def get_failed(self, job_id: str) -> FailedJob | None:
        pipe = self._client.pipeline(transaction=False)
        pipe.hmget(self._keys.failed_job(job_id), ["job", "failure"])
        pipe.zscore(self._keys.FAILED, job_id)
        (record, failure), at = pipe.execute()
        if record is None or failure is None:
            return None
        return _failed_job(record, failure, at)
