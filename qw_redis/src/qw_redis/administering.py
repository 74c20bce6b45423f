"""Acting on failed and stray jobs: the :class:`~qw_core.broker.Administrator` role of the Redis broker.

A run over the whole failed registry goes in script calls of a bounded size, up to the
newest failure there was when it began. One part of :class:`~qw_redis.broker.RedisBroker`,
over the connection of :mod:`qw_redis.base`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import cast

import attrs
import redis

from qw_core.errors import InvalidJob, WorkerRunning
from qw_core.unique import Unique, unique_of
from qw_redis import codec
from qw_redis.base import RedisBase, log, translated

#: Most failed jobs one ``purge_failed.lua`` or ``purge_failed_upto.lua`` call deletes
#: (about 1.5 ms).
PURGE_BATCH = 500
#: Most jobs one call of ``move.lua`` moves (:meth:`AdministratorPart.move_queued`).
MOVE_BATCH = 1000
#: Most failed jobs one ``requeue_failed_batch.lua`` call requeues, and one page of the
#: records it reads (a call takes about 1 ms on a 2-core VM).
REQUEUE_BATCH = 100
#: Most bytes of jobs one ``requeue_failed_batch.lua`` call stores (at least one job): jobs
#: may be up to 512 KiB each, and decoding a call's arguments is part of its time.
REQUEUE_BYTES = 1 << 20


def _raw(text: str) -> bytes:
    """The bytes Redis holds for ``text`` (read with surrogateescape, see
    :mod:`qw_redis.connection`), which it sorts members of equal score by."""
    return text.encode("utf-8", "surrogateescape")


def _by_size(
    jobs: Sequence[tuple[str, float, codec.Stored, Unique | None]], most: int
) -> Iterator[list[tuple[str, float, codec.Stored, Unique | None]]]:
    """``jobs`` in order, in runs of at most ``most`` bytes each (a larger job alone)."""
    run: list[tuple[str, float, codec.Stored, Unique | None]] = []
    size = 0
    for job in jobs:
        job_size = job[2].size()
        if run and size + job_size > most:
            yield run
            run, size = [], 0
        run.append(job)
        size += job_size
    if run:
        yield run


class AdministratorPart(RedisBase):
    """The administering methods of :class:`~qw_redis.broker.RedisBroker`."""

    def move_queued(self, name: str, *, to: str | None = None) -> int:
        """See :meth:`Broker.move_queued`; in calls of :data:`MOVE_BATCH` jobs each, so
        Redis is never held up for long."""
        self._check_cached(name)
        if to is not None:
            self._check_cached(to)
        moved = 0
        while True:
            try:
                batch = self._scripts.move(name=name, to=to, limit=MOVE_BATCH)
            except redis.ResponseError as exc:
                if str(exc).startswith("IN_USE "):
                    raise WorkerRunning(str(exc).removeprefix("IN_USE ")) from exc
                raise self._error(exc) from exc
            except redis.RedisError as exc:
                raise self._error(exc) from exc
            moved += batch
            if batch < MOVE_BATCH:
                return moved

    @translated
    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        if job_ids is None:
            return self.purge_all_failed()
        return sum(
            self._scripts.purge_failed(job_ids[start : start + PURGE_BATCH])
            for start in range(0, len(job_ids), PURGE_BATCH)
        )

    @translated
    def purge_all_failed(self, *, progress: Callable[[int], None] | None = None) -> int:
        """See :meth:`Broker.purge_all_failed`: ``purge_failed_upto.lua`` deletes the oldest
        :data:`PURGE_BATCH` entries at a time, up to the newest failure there was when
        this began, until none is left; no id crosses the network."""
        newest = self._newest_failure()
        purged = 0
        while newest is not None:
            batch = self._scripts.purge_failed_upto(upto=newest, limit=PURGE_BATCH)
            purged += batch
            if progress is not None:
                progress(batch)
            if batch < PURGE_BATCH:
                break
        return purged

    def _newest_failure(self) -> float | None:
        """The score (failure time) of the newest entry of ``qw:failed``; ``None`` if it is empty.

        A run over the registry stops there: a job that fails after it began (a job it
        requeued, say) is stamped later by the server's clock, so the run leaves it alone.
        """
        newest = cast(
            "list[tuple[str, float]]", self._client.zrange(self._keys.FAILED, -1, -1, withscores=True)
        )
        return newest[0][1] if newest else None

    @translated
    def requeue_all_failed(self, *, progress: Callable[[Sequence[str]], None] | None = None) -> int:
        """See :meth:`Broker.requeue_all_failed`.

        A job's record has to be stored anew as a job (attempts reset), and only
        :mod:`qw_redis.codec` can do that faithfully (Lua's cjson would lose big integers,
        the order of the data's keys and the difference between ``[]`` and ``{}``): so the
        client reads :data:`REQUEUE_BATCH` records at a time, oldest first, walking
        ``qw:failed`` by (score, id) up to the newest failure there was when it began, and
        ``requeue_failed_batch.lua`` requeues those that are still the failures read (same
        score). A job passed over stays behind the walk and is not tried again; one that
        failed again meanwhile has a later score and is left alone.
        """
        newest = self._newest_failure()
        requeued = 0
        after: tuple[float, str] | None = None
        while newest is not None:
            page = self._failed_page(after, newest, REQUEUE_BATCH)
            if not page:
                break
            after = page[-1][1], page[-1][0]
            done: list[str] = []
            for batch in _by_size(self._stored_anew(page), REQUEUE_BYTES):
                done += self._scripts.requeue_failed_batch(batch)
            requeued += len(done)
            if progress is not None:
                progress(done)
        return requeued

    def _failed_page(
        self, after: tuple[float, str] | None, upto: float, size: int
    ) -> list[tuple[str, float]]:
        """Up to ``size`` entries (id, score) of ``qw:failed`` that sort after ``after``
        (score, id), by score then id as Redis sorts them, with a score up to ``upto``."""
        if after is None:
            return cast(
                "list[tuple[str, float]]",
                self._client.zrangebyscore(
                    self._keys.FAILED, "-inf", repr(upto), start=0, num=size, withscores=True
                ),
            )
        score, last = after[0], _raw(after[1])
        skip = 0
        while True:  # entries with the same score as the last one read may sort before it
            chunk = cast(
                "list[tuple[str, float]]",
                self._client.zrangebyscore(
                    self._keys.FAILED, repr(score), repr(upto), start=skip, num=size, withscores=True
                ),
            )
            fresh = [(job_id, at) for job_id, at in chunk if at > score or _raw(job_id) > last]
            if fresh or len(chunk) < size:
                return fresh
            skip += size

    def _stored_anew(
        self, page: Sequence[tuple[str, float]]
    ) -> list[tuple[str, float, codec.Stored, Unique | None]]:
        """The failed jobs of ``page`` (id, score) stored anew as jobs with attempts reset,
        from their records; one whose record is gone or unreadable is left out (it stays
        in the registry, where ``qw failed show`` finds it)."""
        pipe = self._client.pipeline(transaction=False)
        for job_id, _ in page:
            pipe.hget(self._keys.failed_job(job_id), "job")
        batch = []
        for (job_id, score), record in zip(page, pipe.execute(raise_on_error=False), strict=True):
            if not isinstance(record, str):  # purged meanwhile, or not a hash
                continue
            try:
                job = attrs.evolve(codec.decode_record(record), attempts=0)
                batch.append((job_id, score, codec.encode_job(job, max_size=0), unique_of(job)))
            except (ValueError, TypeError, KeyError, InvalidJob) as exc:
                log.warning(
                    "failed job %s cannot be requeued, its record is unreadable: %s", codec.shown(job_id), exc
                )
        return batch

    @translated
    def requeue_failed(self, job_id: str) -> bool:
        record = cast("str | None", self._client.hget(self._keys.failed_job(job_id), "job"))
        if record is None:
            return False
        job = attrs.evolve(codec.decode_record(record), attempts=0)
        stored = codec.encode_job(job, max_size=0)
        return self._scripts.requeue_failed(job_id=job_id, stored=stored, unique=unique_of(job))
