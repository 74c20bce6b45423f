"""Queueing and results: the :class:`~qw_core.broker.Producer` role of the Redis broker.

Every job of a batch is encoded and checked before anything is written; the batch is then
stored by ``queue.lua`` (``queue_delayed.lua``) calls of a bounded size, each waiting for
``wait_replicas`` replicas if asked. One part of :class:`~qw_redis.broker.RedisBroker`,
over the connection of :mod:`qw_redis.base`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import redis

from qw_core.broker import check_delay
from qw_core.errors import JobsNotReplicated
from qw_core.models import Job
from qw_core.results import JobResult, decode_value
from qw_core.unique import UNIQUE_META, Queued, Unique, unique_of
from qw_redis import codec
from qw_redis.base import MIN_BLOCK, RedisBase, log, translated
from qw_redis.scripts import holders

#: Most jobs, hash fields and bytes of job data (:meth:`codec.Stored.size`) one queueing
#: script call stores: Redis serves nobody else while a script runs, so each call is kept
#: to a few milliseconds (500 small jobs: about 5 ms on a busy 2-core VM; 4,000 fields:
#: 3-4 ms; 256 KiB in large fields: about 1 ms).
QUEUE_BATCH = 500
QUEUE_BATCH_FIELDS = 4000
QUEUE_BATCH_BYTES = 256 * 1024

#: One call of a queueing script: the jobs it stores (id, hash), and the call, which
#: takes an optional ``pipe=`` to be queued on instead (see ``Scripts.replicated``).
_Storing = tuple[list[tuple[str, codec.Stored]], Callable[..., dict[int, str]]]


def _on_pipe(call: Callable[..., Any], pipe: Any) -> Any:
    """``call`` queued on ``pipe`` (see ``_Storing``)."""
    return call(pipe=pipe)


_Item = TypeVar("_Item", bound=tuple[Any, ...])


def _script_batches(jobs: list[_Item], *, at: int = 1) -> Iterator[list[_Item]]:
    """``jobs`` (tuples holding a job's :class:`codec.Stored` at position ``at``) in order,
    cut into the batches one queueing script call stores: at most :data:`QUEUE_BATCH` jobs,
    :data:`QUEUE_BATCH_FIELDS` fields and :data:`QUEUE_BATCH_BYTES` bytes (a single job
    over a bound goes alone)."""
    batch: list[_Item] = []
    fields = size = 0
    for item in jobs:
        stored: codec.Stored = item[at]
        more_fields, more_bytes = len(stored.fields) + 1, stored.size()
        full = len(batch) == QUEUE_BATCH or fields + more_fields > QUEUE_BATCH_FIELDS
        if batch and (full or size + more_bytes > QUEUE_BATCH_BYTES):
            yield batch
            batch, fields, size = [], 0, 0
        batch.append(item)
        fields += more_fields
        size += more_bytes
    if batch:
        yield batch


class ProducerPart(RedisBase):
    """The producing methods of :class:`~qw_redis.broker.RedisBroker`."""

    @translated
    def queue_jobs(self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None) -> list[str]:
        if len(jobs) == 1 and not delay and at is None and not self._options.wait_replicas:
            [job] = jobs
            if not job.meta or UNIQUE_META not in job.meta:
                self._queue_one(job)
                return [job.id]
        for job in jobs:
            if job.meta and UNIQUE_META in job.meta:
                return [queued.id for queued in self._queue(jobs, delay, at)]
        self._queue(jobs, delay, at, uniques=False)
        return [job.id for job in jobs]

    @translated
    def queue_jobs_unique(
        self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None
    ) -> list[Queued]:
        """See :meth:`Broker.queue_jobs_unique`: ``queue.lua`` (``queue_delayed.lua``)
        checks and takes each key in the step that stores its job."""
        return self._queue(jobs, delay, at)

    def _queue_one(self, job: Job) -> None:
        """Queue ``job``, which has no unique key, now: what :meth:`_queue` does for it,
        without the batching (one job is one call), on the path of every job queued one
        at a time, which a waiting worker may be handed at once."""
        origin = self._origin_of(job)
        stored = self._encode_new(job)
        self._scripts.queue(origin=origin, worker=job.worker is not None, jobs=[(job.id, stored)])

    def _queue(
        self, jobs: Sequence[Job], delay: float, at: float | None, *, uniques: bool = True
    ) -> list[Queued]:
        """Queue ``jobs``, grouped by where each goes (or, delayed, by the queue it goes to
        when due); what became of each (with ``uniques`` false: none has a key, and the
        answer is empty)."""
        waits = check_delay(jobs, delay, at)
        batches: dict[tuple[str, bool], list[tuple[int, str, codec.Stored, Unique | None]]] = {}
        for index, job in enumerate(jobs):  # encode (and refuse) everything before anything is written
            place = (self._origin_of(job), job.worker is not None and not waits)
            unique = unique_of(job) if uniques else None
            if unique is not None:
                codec.check_new_id(unique.key or "")
            batches.setdefault(place, []).append((index, job.id, self._encode_new(job), unique))
        calls: list[_Storing] = []
        positions: list[list[int]] = []
        for (origin, to_worker), batch in batches.items():
            for part in _script_batches(batch, at=2):
                stored = [(job_id, encoded) for _, job_id, encoded, _ in part]
                keyed = [unique for *_, unique in part] if uniques else None
                if waits:
                    call = functools.partial(
                        self._scripts.queue_delayed,
                        origin=origin,
                        delay=delay,
                        at=at,
                        jobs=stored,
                        uniques=keyed,
                    )
                else:
                    call = functools.partial(
                        self._scripts.queue, origin=origin, worker=to_worker, jobs=stored, uniques=keyed
                    )
                calls.append((stored, call))
                positions.append([index for index, *_ in part])
        replies = self._store(calls)
        if not uniques:
            return []
        done = [Queued(job.id, True) for job in jobs]
        for reply, where in zip(replies, positions, strict=True):
            for position, holder in reply.items():
                done[where[position]] = Queued(holder, False)
        return done

    def _store(self, calls: Sequence[_Storing]) -> list[dict[int, str]]:
        """Make each call, which stores the jobs it lists; with ``wait_replicas``, each
        returns only once that many replicas have what it wrote (Redis's ``WAIT``). What
        each call answered (see :func:`qw_redis.scripts.holders`).

        :raises JobsNotReplicated: fewer replicas acknowledged a call in time: its jobs are
            queued, the later calls' are not (the message says what to do).
        """
        wanted = self._options.wait_replicas
        timeout_ms = max(1, round(self._options.wait_timeout * 1000))
        replies = []
        for index, (_, call) in enumerate(calls):
            if not wanted:
                replies.append(call())
                continue
            reply, acknowledged = self._scripts.replicated(
                functools.partial(_on_pipe, call), wanted, timeout_ms
            )
            if acknowledged < wanted:
                raise self._not_replicated(calls, index, acknowledged)
            replies.append(holders(reply))
        return replies

    def _not_replicated(self, calls: Sequence[_Storing], index: int, acknowledged: int) -> JobsNotReplicated:
        """The error for call ``index`` of ``calls``, which ``acknowledged`` replicas acknowledged."""
        ids = tuple(job_id for job_id, _ in calls[index][0])
        wanted, within = self._options.wait_replicas, f"{self._options.wait_timeout:g}s"
        return JobsNotReplicated(
            f"{len(ids)} job(s) are queued on the primary of {self.describe()}, but {acknowledged} of the "
            f"{wanted} replica(s) asked for acknowledged them within {within}: they run unless the primary "
            "fails before passing them on; do not queue them again as new jobs, or they run twice",
            job_ids=ids,
            confirmed=tuple(job_id for earlier, _ in calls[:index] for job_id, _ in earlier),
            not_queued=tuple(job_id for later, _ in calls[index + 1 :] for job_id, _ in later),
            wanted=wanted,
            acknowledged=acknowledged,
        )

    def _encode_new(self, job: Job) -> codec.Stored:
        """The hash of a job about to be queued (its id must be text: codec.check_new_id)."""
        codec.check_new_id(job.id)
        return codec.encode_job(job, max_size=self._options.max_job_size)

    def encoded(self, job: Job) -> codec.Stored:
        """The hash ``job`` would be stored as, its names and unique key checked as queueing
        checks them (:class:`~qw_redis.cluster.ClusterBroker` checks a whole batch so, before
        it writes any of it to one shard and the rest to others).

        :raises QwError: what queueing ``job`` would raise before writing anything.
        """
        self._origin_of(job)
        unique = unique_of(job)
        if unique is not None:
            codec.check_new_id(unique.key or "")
        return self._encode_new(job)

    @translated
    def get_result(self, job_id: str) -> JobResult | None:
        """See :meth:`Broker.get_result`: ``HGETALL qw:result:<id>``."""
        try:
            fields = cast("dict[str, str]", self._client.hgetall(self._keys.result(job_id)))
        except redis.ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):  # not qw's: no result
                return None
            raise
        if not fields:
            return None
        try:
            return JobResult(
                job_id=job_id,
                value=decode_value(fields["value"]),
                finished_at=float(fields["finished_at"]),
                worker=fields["worker"],
            )
        except (KeyError, ValueError) as exc:
            log.warning("the result of job %s cannot be read: %s", codec.shown(job_id), exc)
            return None

    @translated
    def wait_result(self, job_id: str, timeout: float) -> JobResult | None:
        """See :meth:`Broker.wait_result`: ``BLPOP qw:done:<id>`` in slices; a waiter that
        gets the token puts it back, so that every waiter wakes."""
        deadline = time.monotonic() + max(0.0, timeout)
        done = self._keys.done(job_id)
        while (found := self.get_result(job_id)) is None:
            remaining = deadline - time.monotonic()
            if remaining < MIN_BLOCK:
                return None
            if self._client.blpop([done], timeout=min(self._slice, remaining)) is not None:
                left = int(self._client.pttl(self._keys.result(job_id)))
                if left > 0:  # the token again, for the next waiter; it expires with the result
                    pipe = self._client.pipeline(transaction=True)
                    pipe.lpush(done, "1")
                    pipe.pexpire(done, left)
                    pipe.execute()
                return self.get_result(job_id)
        return found
