"""A worker's session: the :class:`~qw_core.broker.Consumer` role of the cluster broker.

A worker takes on its home shard first, waits there, and looks at the other shards now
and then (see :mod:`qw_redis.cluster`); the broker remembers the shard of each job it
took, so that the job is finished, failed, retried or released there. One part of
:class:`~qw_redis.cluster.broker.ClusterBroker`, over the shards of :mod:`qw_redis.cluster.base`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

from qw_core.models import DEFAULT_QUEUE, Failure, Job
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_redis import keys
from qw_redis.broker import RedisBroker
from qw_redis.cluster.base import ClusterBase
from qw_redis.cluster.urls import home_shard

#: Longest single wait of a worker on its home shard before it looks at the other shards.
CROSS_SHARD_POLL = 0.5
#: Most taken jobs whose shard a broker remembers (a worker holds far fewer; the rest were
#: settled by others, e.g. recovered after a pause).
MAX_REMEMBERED = 100_000


class ConsumerPart(ClusterBase):
    """The consuming methods of :class:`~qw_redis.cluster.broker.ClusterBroker`."""

    def register_worker(self, *, manager: str, worker: str) -> None:
        self._everywhere(lambda s: s.register_worker(manager=manager, worker=worker))

    def take(
        self,
        *,
        manager: str,
        worker: str,
        finished: Sequence[str] = (),
        held: Sequence[str] = (),
        limit: int = 1,
        timeout: float = 0.0,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        keep_finished: float = 0.0,
    ) -> list[Job]:
        keys.check_name(manager)
        keys.check_name(worker)
        home = home_shard(worker, self._n)
        order = [home, *(i for i in range(self._n) if i != home)]
        held_on = self._held_on(worker, held)
        finishing = self._finishing(finished)
        for index, ids in finishing.items():  # jobs of other shards: finished there first
            if index != home:
                self._on(
                    index,
                    functools.partial(
                        RedisBroker.finish_jobs, worker=worker, job_ids=ids, keep_finished=keep_finished
                    ),
                )
        at_home = finishing.get(home, [])
        deadline = time.monotonic() + timeout

        def take_on(index: int, want: int, wait: float = 0.0, done: Sequence[str] = ()) -> list[Job]:
            jobs = self._on(
                index,
                lambda s: s.take(
                    manager=manager,
                    worker=worker,
                    finished=done,
                    held=held_on.get(index, []),
                    limit=want,
                    timeout=wait,
                    queues=queues,
                    keep_finished=keep_finished,
                ),
            )
            if len(self._where) > MAX_REMEMBERED:  # jobs settled elsewhere (recovered, reaped)
                self._where.clear()  # forgotten ones are looked for on every shard
            for job in jobs:
                self._where[job.id] = index
            return jobs

        limit = max(0, min(limit, self.capabilities.max_take))
        jobs = take_on(home, limit, done=at_home)  # the steady state: this one round trip
        while True:
            for index in order[1:]:  # the batch is filled from the other shards
                if len(jobs) >= limit:
                    return jobs
                jobs += take_on(index, limit - len(jobs))
            remaining = deadline - time.monotonic()
            if jobs or limit <= 0 or remaining <= 0:
                return jobs
            # Nothing anywhere: wait on the home shard, and look at the others now and then.
            wait = min(remaining, CROSS_SHARD_POLL) if self._n > 1 else remaining
            started = time.monotonic()
            jobs = take_on(home, limit, wait)
            if jobs or time.monotonic() - started < wait * 0.9:  # a job, or woken early (a nudge)
                return jobs

    def _finishing(self, finished: Sequence[str]) -> dict[int, list[str]]:
        """``finished`` by the shard each was taken from; an id this broker did not take
        is finished on every shard (finishing is guarded: only where it is held)."""
        by: dict[int, list[str]] = {}
        for job_id in finished:
            index = self._where.pop(job_id, None)
            for shard in range(self._n) if index is None else [index]:
                by.setdefault(shard, []).append(job_id)
        return by

    def _held_on(self, worker: str, held: Sequence[str]) -> dict[int, list[str]]:
        """``held`` by shard; an id this broker did not take is looked for on each shard."""
        by: dict[int, list[str]] = {}
        for job_id in held:
            index = self._where.get(job_id)
            if index is None:
                index = self._held_shard(worker, job_id)
                if index is None:
                    continue  # held nowhere: recovered meanwhile, nothing to protect
                self._where[job_id] = index
            by.setdefault(index, []).append(job_id)
        return by

    def _held_shard(self, worker: str, job_id: str) -> int | None:
        for index in self._likely(job_id):
            if self._on(index, lambda s: s.still_held(worker=worker, job_ids=[job_id]))[0]:
                return index
        return None

    def _shard_holding(self, worker: str, job_id: str) -> int:
        """The shard where ``worker`` holds ``job_id`` (its likely one if none: the call
        there then says it is not held)."""
        index = self._where.get(job_id)
        if index is None:
            index = self._held_shard(worker, job_id)
        return self._likely(job_id)[0] if index is None else index

    def nudge(self, worker: str) -> None:
        self._on(home_shard(keys.check_name(worker), self._n), lambda s: s.nudge(worker))

    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        held = dict.fromkeys(job_ids, False)
        for index, ids in self._finishing(job_ids).items():
            flags = self._on(
                index,
                functools.partial(
                    RedisBroker.finish_jobs, worker=worker, job_ids=ids, keep_finished=keep_finished
                ),
            )
            for job_id, flag in zip(ids, flags, strict=True):
                held[job_id] = held[job_id] or flag
        return [held[job_id] for job_id in job_ids]

    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        index = self._shard_holding(worker, job_id)
        self._where.pop(job_id, None)
        return self._on(
            index, lambda s: s.finish_with_result(worker=worker, job_id=job_id, result=result, ttl=ttl)
        )

    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        index = self._shard_holding(worker, job.id)
        self._where.pop(job.id, None)
        return self._on(index, lambda s: s.fail_job(worker=worker, job=job, failure=failure, limits=limits))

    def fail_jobs(
        self,
        *,
        worker: str,
        failures: Sequence[tuple[Job, Failure]],
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[bool]:
        by: dict[int, list[int]] = {}
        for position, (job, _) in enumerate(failures):
            by.setdefault(self._shard_holding(worker, job.id), []).append(position)
            self._where.pop(job.id, None)
        done = [False] * len(failures)
        for index, positions in by.items():
            part = [failures[p] for p in positions]
            flags = self._on(
                index, functools.partial(RedisBroker.fail_jobs, worker=worker, failures=part, limits=limits)
            )
            for position, flag in zip(positions, flags, strict=True):
                done[position] = flag
        return done

    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        index = self._shard_holding(worker, job.id)
        self._where.pop(job.id, None)
        return self._on(index, lambda s: s.retry_job(worker=worker, job=job, delay=delay))

    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        by: dict[int, list[str]] = {}
        for job_id in job_ids:
            by.setdefault(self._shard_holding(worker, job_id), []).append(job_id)
            self._where.pop(job_id, None)
        return sum(
            self._on(i, functools.partial(RedisBroker.release_jobs, worker=worker, job_ids=ids))
            for i, ids in by.items()
        )

    def recover_worker(
        self,
        *,
        manager: str,
        worker: str,
        max_recoveries: int | None = None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> int:
        recover = functools.partial(
            RedisBroker.recover_worker,
            manager=manager,
            worker=worker,
            max_recoveries=max_recoveries,
            crashed_job=crashed_job,
            suspects=suspects,
            limits=limits,
        )
        return sum(self._all(recover))

    def deregister_worker(self, *, manager: str, worker: str) -> None:
        self._everywhere(lambda s: s.deregister_worker(manager=manager, worker=worker))
