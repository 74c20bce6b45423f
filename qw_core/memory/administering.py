"""Acting on failed and stray jobs: the :class:`~qw_core.broker.Administrator` role of the memory broker.

One part of :class:`~qw_core.memory.MemoryBroker`, over the state of :mod:`qw_core.memory.state`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import attrs

from qw_core.encoding import decode_job, encode_job
from qw_core.errors import WorkerRunning
from qw_core.memory.state import MemoryBase
from qw_core.unique import unique_of


class AdministratorPart(MemoryBase):
    """The administering methods of :class:`~qw_core.memory.MemoryBroker`."""

    def requeue_failed(self, job_id: str) -> bool:
        """See :meth:`Broker.requeue_failed`; the job goes to the back of its queue."""
        state = self._state
        with state.cond:
            if job_id in state.jobs:  # a live job has this id: leave both alone
                return False
            entry = state.failed.get(job_id)
            if entry is None:
                return False
            job = decode_job(entry.job)
            unique = unique_of(job)
            if unique is not None and unique.key is not None:  # it takes its key again, if free
                now = time.monotonic()
                holder = state.unique.holder(unique.key, stored=self._stored, started=self._started, now=now)
                if holder is not None and holder != job_id:
                    return False
                if holder is None:
                    state.unique.claim(unique, job_id, now=now)
            del state.failed[job_id]
            state.jobs[job_id] = encode_job(attrs.evolve(job, attempts=0))
            state.queues[entry.origin].append(job_id)
            state.cond.notify_all()
            return True

    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        """See :meth:`Broker.purge_failed`."""
        state = self._state
        with state.cond:
            doomed = list(state.failed) if job_ids is None else [i for i in job_ids if i in state.failed]
            for job_id in dict.fromkeys(doomed):
                del state.failed[job_id]
            return len(set(doomed))

    def move_queued(self, name: str, *, to: str | None = None) -> int:
        """See :meth:`Broker.move_queued`."""
        self.check_name(name)
        if to is not None:
            self.check_name(to)
        state = self._state
        with state.cond:
            held = state.held.get(name)
            if held and self._worker_running(name, time.monotonic()):
                raise WorkerRunning(f"worker {name} is running: the jobs on its list are its own")
            moving = list(state.queues.pop(name, ()))
            if held:
                moving += list(held)
                held.clear()
            state.queues[to].extend(moving)
            state.cond.notify_all()
            return len(moving)
