"""Queueing and results: the :class:`~qw_core.broker.Producer` role of the memory broker.

One part of :class:`~qw_core.memory.MemoryBroker`, over the state of :mod:`qw_core.memory.state`.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence

from qw_core.broker import check_delay
from qw_core.memory.state import WORKERS_MANAGER, MemoryBase, named_origin
from qw_core.models import Job
from qw_core.results import JobResult
from qw_core.unique import Queued, unique_of


class ProducerPart(MemoryBase):
    """The producing methods of :class:`~qw_core.memory.MemoryBroker`."""

    def queue_jobs(self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None) -> list[str]:
        """See :meth:`Broker.queue_jobs`; the whole batch is checked before any job is stored.

        A job whose id is queued, held or delayed already is left alone (so is the second
        of two jobs with one id in a batch), as the contract asks.
        """
        return [queued.id for queued in self.queue_jobs_unique(jobs, delay=delay, at=at)]

    def queue_jobs_unique(
        self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None
    ) -> list[Queued]:
        """See :meth:`Broker.queue_jobs_unique`; one lock covers the check and the store."""
        waits = check_delay(jobs, delay, at)
        staged = [(job, self._encode(job), unique_of(job)) for job in jobs]
        state = self._state
        done: list[Queued] = []
        with state.cond:
            now = time.monotonic()
            due = now + (delay if at is None else at - time.time())
            for job, text, unique in staged:
                if job.id in state.jobs:
                    done.append(Queued(job.id, True))
                    continue
                if unique is not None and unique.key is not None:
                    holder = state.unique.holder(
                        unique.key, stored=self._stored, started=self._started, now=now
                    )
                    if holder is not None:
                        done.append(Queued(holder, False))
                        continue
                    state.unique.claim(unique, job.id, now=now)
                done.append(Queued(job.id, True))
                state.jobs[job.id] = text
                origin = job.manager if job.manager is not None else named_origin(job.queue)
                if waits:
                    heapq.heappush(state.delayed, (due, next(state.sequence), job.id, origin))
                elif job.worker is not None:  # not taken yet (whatever manager it names), as on Redis
                    state.held[job.worker][job.id] = WORKERS_MANAGER
                else:
                    state.queues[origin].append(job.id)
            state.cond.notify_all()
        return done

    def get_result(self, job_id: str) -> JobResult | None:
        """See :meth:`Broker.get_result`."""
        with self._state.cond:
            return self._result(job_id)

    def wait_result(self, job_id: str, timeout: float) -> JobResult | None:
        """See :meth:`Broker.wait_result`."""
        deadline = time.monotonic() + max(0.0, timeout)
        state = self._state
        with state.cond:
            while (found := self._result(job_id)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                state.cond.wait(remaining)
            return found
