"""Every read: the :class:`~qw_core.broker.Inspector` role of the memory broker.

One part of :class:`~qw_core.memory.MemoryBroker`, over the state of :mod:`qw_core.memory.state`.
"""

from __future__ import annotations

import itertools
import time

from qw_core.broker import check_minutes, check_page
from qw_core.encoding import decode_failure, decode_job
from qw_core.memory.state import NAMED, WORKERS_MANAGER, MemoryBase, paged
from qw_core.models import FailedJob, Job, JobsRun, JobState, RunningJob, State, queue_label


class InspectorPart(MemoryBase):
    """The inspecting methods of :class:`~qw_core.memory.MemoryBroker`."""

    def job_status(self, job_id: str) -> JobState:
        """See :meth:`Broker.job_status`."""
        state = self._state
        with state.cond:
            self._promote_due()
            entry = state.failed.get(job_id)
            if entry is not None:
                job, failure = decode_job(entry.job), decode_failure(entry.failure)
                return JobState(
                    job_id=job_id,
                    state=State.FAILED,
                    job=job,
                    queue=queue_label(job),
                    worker=failure.worker,
                    failure=failure,
                )
            text = state.jobs.get(job_id)
            if text is not None:
                job = decode_job(text)
                holder = next((w for w, held in state.held.items() if job_id in held), None)
                if holder is not None and state.held[holder][job_id] != WORKERS_MANAGER:
                    jobs, expiry = state.running.get(holder, ({}, 0.0))
                    since = jobs.get(job_id) if expiry > time.monotonic() else None
                    label = queue_label(job)
                    return JobState(
                        job_id=job_id, state=State.HELD, job=job, queue=label, worker=holder, since=since
                    )
                due = next((due for due, _, i, _ in state.delayed if i == job_id), None)
                if due is not None:
                    at = time.time() + (due - time.monotonic())
                    return JobState(
                        job_id=job_id, state=State.DELAYED, job=job, queue=queue_label(job), due_at=at
                    )
                return JobState(job_id=job_id, state=State.QUEUED, job=job, queue=queue_label(job))
            return self._ended_state(job_id)

    def _ended_state(self, job_id: str) -> JobState:
        """The state of a job that is not stored: succeeded while remembered, else unknown;
        the caller holds the lock."""
        found = self._result(job_id)
        if found is not None:
            return JobState(
                job_id=job_id,
                state=State.SUCCEEDED,
                worker=found.worker,
                result=found,
                finished_at=found.finished_at,
            )
        noted = self._state.finished.get(job_id)
        if noted is not None and noted[1] > time.monotonic():
            return JobState(job_id=job_id, state=State.SUCCEEDED, finished_at=noted[0])
        return JobState(job_id=job_id, state=State.UNKNOWN)

    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        """See :meth:`Broker.heartbeat_of`."""
        with self._state.cond:
            now = time.monotonic()
            if not self._state.alive(name, now):
                return None
            token, expires = self._state.heartbeats[name]
            return token, expires - now

    def managers(self) -> list[str]:
        """See :meth:`Broker.managers`."""
        with self._state.cond:
            return sorted(self._state.managers)

    def workers(self, manager: str) -> list[str]:
        """See :meth:`Broker.workers`."""
        with self._state.cond:
            return sorted(self._state.workers.get(manager, ()))

    def running_jobs(self, manager: str) -> list[RunningJob]:
        """See :meth:`Broker.running_jobs`."""
        self.check_name(manager)
        state = self._state
        with state.cond:
            now = time.monotonic()
            found = []
            for worker in sorted(state.workers.get(manager, ())):
                jobs, expiry = state.running.get(worker, ({}, 0.0))
                if expiry <= now:
                    continue
                for job_id in sorted(jobs):
                    text = state.jobs.get(job_id)
                    label = None if text is None else queue_label(decode_job(text))
                    found.append(RunningJob(job_id=job_id, worker=worker, since=jobs[job_id], queue=label))
            return found

    def queued_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.queued_job_ids`. Delayed jobs are listed once they are due."""
        check_page(offset, limit)
        origin = self._listed(manager, queue)
        with self._state.cond:
            self._promote_due()
            return paged(self._state.queues.get(origin, ()), offset, limit)

    def queued_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        """See :meth:`Broker.queued_count`: the queue's length, without listing it."""
        origin = self._listed(manager, queue)
        with self._state.cond:
            self._promote_due()
            return len(self._state.queues.get(origin, ()))

    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        """See :meth:`Broker.held_job_ids`; oldest first."""
        check_page(offset, limit)
        with self._state.cond:
            return paged(self._state.held.get(worker, ()), offset, limit)

    def held_count(self, worker: str) -> int:
        """See :meth:`Broker.held_count`."""
        with self._state.cond:
            return len(self._state.held.get(worker, ()))

    def delayed_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.delayed_job_ids`."""
        check_page(offset, limit)
        wanted = self._listed(manager, queue)
        with self._state.cond:
            self._promote_due()
            due = (job_id for _, _, job_id, origin in sorted(self._state.delayed) if origin == wanted)
            return paged(due, offset, limit)

    def named_queues(self) -> list[str]:
        """See :meth:`Broker.named_queues`."""
        with self._state.cond:
            origins = {*self._state.queues, *(entry[3] for entry in self._state.delayed)}
        return sorted(o[len(NAMED) :] for o in origins if o is not None and o.startswith(NAMED))

    def get_job(self, job_id: str) -> Job | None:
        """See :meth:`Broker.get_job`: queued, held, delayed and failed jobs are stored."""
        with self._state.cond:
            text = self._state.jobs.get(job_id)
            if text is None and job_id in self._state.failed:
                text = self._state.failed[job_id].job
        return None if text is None else decode_job(text)

    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        """See :meth:`Broker.failed_jobs`."""
        with self._state.cond:
            newest = list(reversed(self._state.failed.items()))[: max(0, limit)]
            found = [(entry.job, entry.failure) for _, entry in newest]
        return [FailedJob(job=decode_job(job), failure=decode_failure(failure)) for job, failure in found]

    def failed_jobs_page(self, *, offset: int = 0, limit: int = 100) -> list[FailedJob]:
        """See :meth:`Broker.failed_jobs_page`: only the page's entries are decoded."""
        check_page(offset, limit)
        with self._state.cond:
            newest = reversed(self._state.failed.values())
            found = [(e.job, e.failure) for e in itertools.islice(newest, offset, offset + limit)]
        return [FailedJob(job=decode_job(job), failure=decode_failure(failure)) for job, failure in found]

    def failed_count(self) -> int:
        """See :meth:`Broker.failed_count`."""
        with self._state.cond:
            return len(self._state.failed)

    def get_failed(self, job_id: str) -> FailedJob | None:
        """See :meth:`Broker.get_failed`."""
        with self._state.cond:
            entry = self._state.failed.get(job_id)
        if entry is None:
            return None
        return FailedJob(job=decode_job(entry.job), failure=decode_failure(entry.failure))

    def job_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """See :meth:`Broker.job_ids_with_prefix`."""
        with self._state.cond:
            state = self._state
            known = dict.fromkeys([*state.jobs, *state.failed, *state.results, *state.finished])
            found = (job_id for job_id in known if job_id.startswith(prefix))
            return list(itertools.islice(found, max(0, limit)))

    def failed_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """See :meth:`Broker.failed_ids_with_prefix`."""
        with self._state.cond:
            found = (job_id for job_id in self._state.failed if job_id.startswith(prefix))
            return list(itertools.islice(found, max(0, limit)))

    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        """See :meth:`Broker.jobs_run`."""
        check_minutes(minutes)
        now = int(time.time() // 60) * 60
        with self._state.cond:
            return [
                JobsRun(minute=minute, counts=dict(self._state.jobs_run.get(minute, {})))
                for minute in range(now - 60 * (minutes - 1), now + 1, 60)
            ]

    def stray_queues(self) -> dict[str, int]:
        """See :meth:`Broker.stray_queues`."""
        state = self._state
        with state.cond:
            self._promote_due()
            found = {
                name: len(ids)
                for name, ids in state.queues.items()
                if name is not None and not name.startswith(NAMED) and ids
            }
            for worker, held in state.held.items():
                if held:
                    found[worker] = found.get(worker, 0) + len(held)
            now = time.monotonic()
            return {name: count for name, count in sorted(found.items()) if not self._running(name, now)}
