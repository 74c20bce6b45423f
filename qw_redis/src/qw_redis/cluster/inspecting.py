"""Jobs and the running system: the :class:`~qw_core.broker.Inspector` role of the cluster
broker, but for the listings (:mod:`qw_redis.cluster.listing`).

A lookup by job id asks the shard most likely to hold the job first; what runs, who runs
it and what is wrong are gathered from every shard. One part of
:class:`~qw_redis.cluster.broker.ClusterBroker`, over the shards of :mod:`qw_redis.cluster.base`.
"""

from __future__ import annotations

from qw_core.models import Job, JobsRun, JobState, RunningJob, State
from qw_redis.cluster.base import ClusterBase


class InspectorPart(ClusterBase):
    """The read-only methods of :class:`~qw_redis.cluster.broker.ClusterBroker` about jobs,
    workers and the servers."""

    def managers(self) -> list[str]:
        return sorted({m for names in self._all(lambda s: s.managers()) for m in names})

    def workers(self, manager: str) -> list[str]:
        return sorted({w for names in self._all(lambda s: s.workers(manager)) for w in names})

    def named_queues(self) -> list[str]:
        return sorted({q for names in self._all(lambda s: s.named_queues()) for q in names})

    def get_job(self, job_id: str) -> Job | None:
        return self._first(self._likely(job_id), lambda s: s.get_job(job_id))

    def job_status(self, job_id: str) -> JobState:
        found = None
        for index in self._likely(job_id):
            state = self._on(index, lambda s: s.job_status(job_id))
            if state.state is not State.UNKNOWN:
                return state
            found = found or state
        assert found is not None
        return found

    def running_jobs(self, manager: str) -> list[RunningJob]:
        found: dict[str, RunningJob] = {}
        for jobs in self._all(lambda s: s.running_jobs(manager)):
            for job in jobs:  # every shard keeps what workers run; only the job's knows its queue
                old = found.get(job.job_id)
                if old is None or (old.queue is None and job.queue is not None):
                    found[job.job_id] = job
        return sorted(found.values(), key=lambda j: (j.worker, j.job_id))

    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        totals: dict[int, dict[str, int]] = {}
        for runs in self._all(lambda s: s.jobs_run(minutes=minutes)):
            for run in runs:
                counts = totals.setdefault(run.minute, {})
                for name, count in run.counts.items():
                    counts[name] = counts.get(name, 0) + count
        return [JobsRun(minute=m, counts=c) for m, c in sorted(totals.items())]

    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        return self._first(range(self._n), lambda s: s.heartbeat_of(name))

    def stray_queues(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for strays in self._all(lambda s: s.stray_queues()):
            for name, count in strays.items():
                totals[name] = totals.get(name, 0) + count
        return dict(sorted(totals.items()))

    def problems(self) -> list[str]:
        return [problem for found in self._all(lambda s: s.problems()) for problem in found]

    def setup_warnings(self) -> list[str]:
        return list(dict.fromkeys(w for found in self._all(lambda s: s.setup_warnings()) for w in found))
