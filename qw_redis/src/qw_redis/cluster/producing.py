"""Queueing and results: the :class:`~qw_core.broker.Producer` role of the cluster broker.

Each job goes to one shard (:meth:`ProducerPart.shard_of`, see :mod:`qw_redis.cluster`),
a batch in one call per shard; a result is read on the shard its job is on. One part of
:class:`~qw_redis.cluster.broker.ClusterBroker`, over the shards of :mod:`qw_redis.cluster.base`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from qw_core.broker import check_delay
from qw_core.errors import JobsNotReplicated
from qw_core.models import Job, State
from qw_core.results import JobResult
from qw_core.unique import Queued, unique_of
from qw_redis.broker import RedisBroker
from qw_redis.cluster.base import ClusterBase
from qw_redis.cluster.urls import home_shard, id_shard


class ProducerPart(ClusterBase):
    """The producing methods of :class:`~qw_redis.cluster.broker.ClusterBroker`."""

    def shard_of(self, job: Job) -> int:
        """The shard ``job`` is queued on (see :mod:`qw_redis.cluster`)."""
        unique = unique_of(job)
        if unique is not None and unique.key is not None:  # one place holds the key
            return id_shard(unique.key, self._n)
        if job.worker is not None:
            return home_shard(job.worker, self._n)
        return id_shard(job.id, self._n)

    def _by_shard(self, jobs: Sequence[Job]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for position, job in enumerate(jobs):
            groups.setdefault(self.shard_of(job), []).append(position)
        return groups

    def queue_jobs(self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None) -> list[str]:
        done = self.queue_jobs_unique(jobs, delay=delay, at=at)
        return [queued.id for queued in done]

    def queue_jobs_unique(
        self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None
    ) -> list[Queued]:
        done: list[Queued] = [Queued(job.id, True) for job in jobs]
        groups = list(self._by_shard(jobs).items())
        if len(groups) > 1:  # refuse a bad job before any shard is written (each checks its own)
            check_delay(jobs, delay, at)
            for job in jobs:
                self._shards[0].encoded(job)
        for step, (index, positions) in enumerate(groups):
            part = [jobs[p] for p in positions]
            try:
                answers = self._on(
                    index, functools.partial(RedisBroker.queue_jobs_unique, jobs=part, delay=delay, at=at)
                )
            except JobsNotReplicated as exc:  # say which jobs of the whole call got where
                earlier = tuple(jobs[p].id for _, ps in groups[:step] for p in ps)
                later = tuple(jobs[p].id for _, ps in groups[step + 1 :] for p in ps)
                raise JobsNotReplicated(
                    str(exc),
                    job_ids=exc.job_ids,
                    confirmed=earlier + exc.confirmed,
                    not_queued=exc.not_queued + later,
                    wanted=exc.wanted,
                    acknowledged=exc.acknowledged,
                ) from exc
            for position, answer in zip(positions, answers, strict=True):
                done[position] = answer
        return done

    def get_result(self, job_id: str) -> JobResult | None:
        return self._first(self._likely(job_id), lambda s: s.get_result(job_id))

    def wait_result(self, job_id: str, timeout: float) -> JobResult | None:
        # A job's result is written on the shard the job is on: find it, then wait there.
        index = self._likely(job_id)[0]
        for candidate in self._likely(job_id):
            if self._on(candidate, lambda s: s.job_status(job_id)).state is not State.UNKNOWN:
                index = candidate
                break
        return self._on(index, lambda s: s.wait_result(job_id, timeout))
