"""A worker's session: the :class:`~qw_core.broker.Consumer` role of the memory broker.

One part of :class:`~qw_core.memory.MemoryBroker`, over the state of :mod:`qw_core.memory.state`.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence

import attrs

from qw_core.encoding import decode_job
from qw_core.memory.state import RESULTS_SWEEP_AT, WORKERS_MANAGER, MemoryBase, Origin, named_origin
from qw_core.models import DEFAULT_QUEUE, Failure, Job
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.results import check_ttl


class ConsumerPart(MemoryBase):
    """The consuming methods of :class:`~qw_core.memory.MemoryBroker`."""

    def register_worker(self, *, manager: str, worker: str) -> None:
        """See :meth:`Broker.register_worker`."""
        self.check_name(manager)
        self.check_name(worker)
        with self._state.cond:
            self._state.workers[manager].add(worker)

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
        """See :meth:`Broker.take`. ``limit`` is clamped to ``0 .. capabilities.max_take``.

        Never returns ``[]`` early: the wait is cut only by a new job or the next due time.
        """
        self.check_name(manager)
        self.check_name(worker)
        origins: list[Origin] = [manager]
        for queue in queues:
            if queue != DEFAULT_QUEUE:
                self.check_name(queue)
            origins.append(named_origin(queue))
        limit = max(0, min(limit, self.capabilities.max_take))
        deadline = time.monotonic() + max(0.0, timeout)
        state = self._state
        with state.cond:
            self._finish(worker, finished, check_ttl(keep_finished))
            if limit == 0:
                return []
            skip = set(held)
            while True:
                next_due = self._promote_due()
                taken = self._take_ids(manager, worker, skip, limit, origins)
                if taken:
                    return [self._handed_out(job_id) for job_id in taken]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or worker in state.nudged:
                    state.nudged.discard(worker)
                    return []
                state.blocked_takes += 1
                try:
                    state.cond.wait(remaining if next_due is None else min(remaining, next_due))
                finally:
                    state.blocked_takes -= 1

    def _handed_out(self, job_id: str) -> Job:
        """The taken job, marked if it is a suspect (until it ends: see recover_worker)."""
        job = decode_job(self._state.jobs[job_id])
        return attrs.evolve(job, suspect=True) if job_id in self._state.suspects else job

    def nudge(self, worker: str) -> None:
        """See :meth:`Broker.nudge`."""
        self.check_name(worker)
        with self._state.cond:
            self._state.nudged.add(worker)
            self._state.cond.notify_all()

    def _take_ids(
        self, manager: str, worker: str, skip: set[str], limit: int, origins: Sequence[Origin]
    ) -> list[str]:
        """Take up to ``limit`` ids in the contract's order (after the worker's own, the
        queues of ``origins``, in order); the caller holds the lock."""
        state = self._state
        own = state.held[worker]
        taken = [job_id for job_id in own if job_id not in skip][:limit]
        for job_id in taken:
            if own[job_id] == WORKERS_MANAGER:
                own[job_id] = manager
        for origin in origins:
            queue = state.queues.get(origin)
            while queue and len(taken) < limit:
                job_id = queue.popleft()
                own[job_id] = origin
                taken.append(job_id)
        return taken

    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        """See :meth:`Broker.finish_jobs`."""
        keep = check_ttl(keep_finished)
        with self._state.cond:
            return self._finish(worker, job_ids, keep)

    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        """See :meth:`Broker.finish_with_result`; kept for ``ttl`` seconds on this process's clock."""
        check_ttl(ttl)
        state = self._state
        with state.cond:
            [held] = self._finish(worker, [job_id])
            if held:
                if len(state.results) >= RESULTS_SWEEP_AT:  # results nobody read: drop the expired
                    now = time.monotonic()
                    state.results = {k: v for k, v in state.results.items() if v[3] > now}
                state.results[job_id] = (result, time.time(), worker, time.monotonic() + ttl)
                state.cond.notify_all()
            return held

    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        """See :meth:`Broker.fail_job`. The failed job stays readable with :meth:`get_job`;
        its ``failed_at`` is this process's clock at the time it is recorded."""
        text = self._encode(attrs.evolve(job, attempts=job.attempts + 1))  # the failed run counts
        state = self._state
        with state.cond:
            if not self._holds(worker, job.id):
                return False
            origin = self._unhold(worker, job.id)
            del state.jobs[job.id]
            state.recoveries.pop(job.id, None)
            state.suspects.discard(job.id)
            self._ended(job.id)
            self._add_failed(job.id, text, failure, origin, limits)
            return True

    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        """See :meth:`Broker.retry_job`. The job goes to the back of its queue when due."""
        text = self._encode(attrs.evolve(job, attempts=job.attempts + 1))
        state = self._state
        with state.cond:
            if not self._holds(worker, job.id):
                return False
            origin = self._unhold(worker, job.id)
            state.jobs[job.id] = text
            state.suspects.discard(job.id)  # it ran and raised: no crash
            if delay > 0:
                due = time.monotonic() + delay
                heapq.heappush(state.delayed, (due, next(state.sequence), job.id, origin))
            else:
                state.queues[origin].append(job.id)
            state.cond.notify_all()  # also makes blocked takers recompute their wait
            return True

    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        """See :meth:`Broker.release_jobs`; released jobs keep the order they had."""
        state = self._state
        count = 0
        with state.cond:
            for job_id in reversed(list(dict.fromkeys(job_ids))):
                if self._holds(worker, job_id):
                    state.queues[self._unhold(worker, job_id)].appendleft(job_id)
                    count += 1
            state.cond.notify_all()
        return count

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
        """See :meth:`Broker.recover_worker`.

        Recovered jobs go to the *front* of their queues, in the order the worker held
        them: they were queued before anything still waiting there.
        """
        self.check_name(manager)
        self.check_name(worker)
        with self._state.cond:
            return self._recover(
                manager, worker, max_recoveries, crashed_job=crashed_job, suspects=suspects, limits=limits
            ).requeued

    def deregister_worker(self, *, manager: str, worker: str) -> None:
        """See :meth:`Broker.deregister_worker`; jobs the worker holds stay held."""
        self.check_name(manager)
        self.check_name(worker)
        with self._state.cond:
            self._state.workers[manager].discard(worker)
            self._state.heartbeats.pop(worker, None)
