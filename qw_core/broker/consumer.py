"""The consumer's role: one worker's session, from registering to deregistering.

Everything a worker process does to the broker is here: it registers, takes jobs onto its
**held list**, settles each one it took (finished, failed, retried or released back) and,
when it stops, gives back what it still holds and deregisters. Its manager uses the same
calls on the worker's behalf when the process dies (:meth:`Consumer.recover_worker`) or
overruns a time limit (the settle calls of :mod:`qw_core.settle`).

Settlements travel with the next take: :meth:`Consumer.take` finishes the jobs a worker
just completed and takes the next ones in one call, so a networked backend serves a busy
worker in one round trip per batch.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from qw_core.broker.role import Role
from qw_core.models import DEFAULT_QUEUE, Failure, Job
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits


class Consumer(Role):
    """A worker's session: take jobs, then settle each one, guarded by the held list.

    The contract, for every method below:

    * **Held list.** A job is on its worker's held list from the moment a take hands it
      out until it is settled; it is never on two lists, nor on a list and a queue.
    * **Guarded settling.** Every settle call (finish, fail, retry, release) acts only on
      jobs still on the named worker's held list and leaves any other alone, so a worker
      that was paused and reaped meanwhile cannot settle a job handed to someone else,
      and a settle call retried after a timeout does nothing the second time (idempotent).
    * **Atomicity.** Each settle call is atomic per job: a job's data, queue entry and
      held-list entry change together.
    * **Where a job goes back.** A job a worker took goes back (released, retried,
      recovered, or requeued from the failed registry) to the queue :meth:`take` took it
      from, which the backend records then: ``take`` names the worker's manager, so a
      backend never has to work it out. A job queued straight onto a worker's list has no
      queue of its own until the worker takes it; put back before that, it goes to the
      queue of the manager :meth:`recover_worker` names. For the rare settle call on it
      (fail, retry, release; a failed one is requeued the same way), it goes to the queue
      of the manager the worker registered under (:meth:`register_worker`; one of them,
      if it registered under several), whatever the worker's name; only for a worker
      registered under none, to that of the manager its name says, ``<manager>.<pid>``
      (which every worker qw starts has), and for a name of another form, to the shared
      queue. That is ``capabilities.registered_managers``, which every shipped backend
      has: a backend without it may read the manager from the worker's name even when it
      is registered, or use the shared queue.
    * **Blocking.** Only :meth:`take` blocks (up to its ``timeout``), and
      :meth:`nudge` cuts that wait short.
    * **A worker that dies** holding jobs loses none: they stay on its held list until
      :meth:`recover_worker` puts them back (called by its manager, which saw it exit; or
      by a reaper, :meth:`Membership.reap <qw_core.broker.Membership.reap>`, when its
      heartbeat lapsed).
    """

    @abc.abstractmethod
    def register_worker(self, *, manager: str, worker: str) -> None:
        """Announce that ``worker`` of ``manager`` is running (idempotent).

        With ``capabilities.session_liveness``, this broker object becomes the worker's
        session until :meth:`deregister_worker` or :meth:`close`: a worker process
        registers on the broker it takes with, so that the session ends with the process
        (see :class:`~qw_core.broker.Membership`).
        """

    @abc.abstractmethod
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
        """Finish ``finished``, then take up to ``limit`` jobs for ``worker``.

        Finishing is guarded: a job id is removed (with its data) only if it is still on
        ``worker``'s held list; a job that was recovered and handed to someone else
        meanwhile is left alone. With ``keep_finished`` > 0, each job finished is
        remembered for that many seconds, so that :meth:`Inspector.job_status` says it succeeded
        (at most :data:`~qw_core.results.FINISHED_CAP` of them, the newest; 0: nothing is
        kept). Remembering costs at most a write per call, and never fails the finish.

        Jobs are taken, in this order, from: ids on ``worker``'s held list that are not in
        ``held`` (left over or queued directly), oldest first; ``manager``'s queue; then
        ``queues``, in strict priority order (a job on an earlier queue is always taken
        before one on a later one; ``"default"`` is the shared queue). Each taken job is on
        ``worker``'s held list before this returns. If none is available, waits up to
        ``timeout`` seconds for one (on any of them); returns ``[]`` when the wait runs
        out. It may also return ``[]`` early (a spurious wake-up): callers loop. ``limit=0``
        only finishes; a ``limit`` above ``capabilities.max_take`` is cut down to it.

        :param queues: the named queues served, by priority; the names are checked as
            :meth:`check_name` checks a manager's.
        :param held: exactly the ids ``worker`` has taken and not settled yet (excluding
            ``finished``): running, or waiting their turn; they are not handed out again.
            Ids on the held list that the worker never saw (a reply lost to a connection
            error) are handed out again by a later take, before anything else: never one
            of ``held``, wherever on the list it is (a worker running jobs at once takes
            while some of them run).
        """

    @abc.abstractmethod
    def nudge(self, worker: str) -> None:
        """Make a :meth:`take` by ``worker`` that waits for a job now, or the next one that
        would wait, return at once (with whatever it takes, possibly nothing).

        A worker running jobs concurrently waits in a take while some of its jobs run;
        when one completes, it nudges itself (from another broker object, in the thread
        that ran the job), so that it settles the job and fills the free slot at once
        instead of at the end of the wait. A nudge nobody waited for ends one later wait
        early, at most; it never takes or loses a job.
        """

    @abc.abstractmethod
    def still_held(self, *, worker: str, job_ids: Sequence[str]) -> list[bool]:
        """Which of ``job_ids`` are on ``worker``'s held list now.

        A worker asks before running jobs that waited in its batch (it may have been
        paused past its heartbeat TTL and reaped meanwhile). :class:`~qw_core.broker.Broker`
        answers from :meth:`Inspector.held_job_ids <qw_core.broker.Inspector.held_job_ids>`;
        a backend that can answer more cheaply overrides it.
        """

    @abc.abstractmethod
    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        """Finish jobs now, guarded (and remembered for ``keep_finished`` seconds) as in
        :meth:`take`; say which ones ``worker`` still held."""

    @abc.abstractmethod
    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        """Finish one job and keep what it returned, in one atomic step, guarded as
        :meth:`finish_jobs` is: only if ``worker`` still holds it (else nothing is written
        and this returns ``False``), so a job's result is never kept without its finish,
        nor its finish without its result. Wakes every :meth:`Producer.wait_result` on it.

        :param result: the value as JSON text (:func:`qw_core.results.encode_value`).
        :param ttl: seconds to keep it (more than 0); a new result of the same id replaces it.
        """

    @abc.abstractmethod
    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        """Move ``job`` from ``worker``'s held list to the failed-job registry, atomically.

        The registry keeps the job with the failed run counted: ``attempts`` is one more
        than ``job.attempts`` (the runs that failed before this one).

        Guarded: does nothing and returns ``False`` if ``worker`` no longer holds it.

        The failure is recorded at the backend's own time (``failure.failed_at``, the
        failing host's clock, is not trusted: hosts disagree), which is the ``failed_at``
        the registry reports. In the same atomic step the registry is trimmed to
        ``limits``: entries that failed more than ``limits.max_age`` seconds ago, then the
        oldest beyond ``limits.max_count``, are deleted (the new entry counts). A backend
        may delete a bounded number per call, so a bound that was just lowered is reached
        over the next few failures.
        """

    def fail_jobs(
        self,
        *,
        worker: str,
        failures: Sequence[tuple[Job, Failure]],
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[bool]:
        """:meth:`fail_job` for each ``(job, failure)``; which ones ``worker`` still held.

        A worker writes the failures of a batch of jobs together, as it finishes the jobs
        that succeeded. This default makes one call per job; a backend that can do them in
        one round trip (Redis: one script call) overrides it. Each job is guarded on its
        own, as in :meth:`fail_job`.
        """
        return [
            self.fail_job(worker=worker, job=job, failure=failure, limits=limits) for job, failure in failures
        ]

    @abc.abstractmethod
    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        """Put ``job`` back on the queue it came from with ``attempts`` incremented.

        The job's data and meta are stored as given (``job`` may be an evolved copy).
        With ``delay`` it becomes available that many seconds later (if the backend
        declares ``capabilities.delayed``; otherwise the caller waits). Guarded as
        :meth:`fail_job`.
        """

    @abc.abstractmethod
    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        """Put held jobs that were never started back at the front of their queues.

        Used when a worker stops with prefetched jobs. Does not count as an attempt.
        Returns how many were put back.
        """

    @abc.abstractmethod
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
        """Put back every job a dead worker held, and remove it from its manager's workers.

        Called by whoever knows the worker is dead (its manager saw the process exit).
        Atomic per job and idempotent; a backend may move a long list in batches so no
        single step blocks others. Jobs the worker took go back to the front of the queue
        they came from, in the order it took them (the first taken runs next); jobs queued
        on the worker directly that it never took go to the back of its manager's queue,
        oldest first. The worker's heartbeat, if any, is deleted. Returns how many jobs
        were put back.

        :param max_recoveries: count, per job, how often it was recovered (the count is
            cleared when the job is finished or failed); a job recovered more often than
            this is a poison job and goes to the failed registry instead, with a
            :class:`~qw_core.models.Failure` of kind ``"crashed"``. ``None`` counts
            nothing (a worker stopped on purpose, not crashed).
        :param crashed_job: the job the worker had in hand when it died, if its manager
            knows it: only that job's recoveries are counted, since the others it held
            (taken in the same batch, or run and not yet finished) did not kill it.
            ``None`` counts every held job (nobody knows which one ran).
        :param suspects: the jobs the worker had in hand when it died, when it had several
            (it ran jobs concurrently): nobody knows which one killed it, so none is
            counted (pass ``max_recoveries=None``); each is put back marked instead, and
            a take that hands it out sets :attr:`Job.suspect`, so that its worker runs it
            alone and a crash then blames it alone. The mark lasts until the job ends
            (finished, failed or retried): one put back unrun is still a suspect.
        :param limits: the failed registry's bounds, applied as :meth:`fail_job` applies
            them when a poison job goes there (the manager's own, so that a crash does not
            trim a registry configured larger to the defaults).
        """

    @abc.abstractmethod
    def deregister_worker(self, *, manager: str, worker: str) -> None:
        """Announce that ``worker`` of ``manager`` has stopped (idempotent); deletes its
        heartbeat, and ends its session if this broker object holds it."""
