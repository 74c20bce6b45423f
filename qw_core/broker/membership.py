"""The membership role: who is running, kept alive by heartbeats, and the reaper.

A manager calls these, from its heartbeat and reaper threads (:mod:`qw_core.liveness`):
it registers itself, vouches for itself and each running worker with a heartbeat that
expires unless refreshed, and its reaper recovers the workers whose heartbeat lapsed, so
that the jobs of a worker whose manager died too are not lost either. (A worker's own
registration is part of its session: :class:`~qw_core.broker.Consumer`.)

The shape is the TTL heartbeat a key-value server keeps (Redis: a key with an expiry per
name). A backend with another way to know who is alive keeps the same promises its own
way: the contract asks only that :meth:`Membership.beat` answers which names it could not
vouch for, and that :meth:`Membership.reap` recovers exactly the workers nobody vouches
for any more, atomically per worker.

A backend that can also tell when a process's connection is gone (PostgreSQL drops a
connection's locks with it) may add that to heartbeats, so that the jobs of a worker
whose whole manager group died come back at the next reap instead of a TTL later: it
declares ``capabilities.session_liveness`` and keeps the rules of *sessions* told in
:class:`Membership`. Heartbeats still decide every case a session cannot (a stopped or
stuck process keeps its connection).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import attrs

from qw_core.broker.role import Role
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits


@attrs.frozen(kw_only=True)
class Reaped:
    """A dead worker whose held jobs a reaper recovered (see :meth:`Membership.reap`).

    :param manager: the worker's manager.
    :param worker: the worker's name.
    :param requeued: jobs put back on their queues.
    :param failed: jobs recovered too often, moved to the failed registry (kind ``"crashed"``).
    """

    manager: str
    worker: str
    requeued: int = 0
    failed: int = 0


class Membership(Role):
    """Managers' membership and heartbeats, and the reaper that acts on lapsed ones.

    The contract, for every method below: registering and deregistering are idempotent;
    :meth:`beat` is one atomic step for the manager and all its workers; :meth:`reap`
    checks that a worker is dead and moves its jobs in one atomic step (per batch), so a
    worker that beats again meanwhile is left alone and concurrent reapers move each job
    once. Nothing here blocks. A held job of a dead worker goes back to its queue, as
    :meth:`Consumer.recover_worker <qw_core.broker.Consumer.recover_worker>` puts it
    back, or to the failed registry once it has been recovered too often.

    **Sessions** (a backend that declares ``capabilities.session_liveness``). The broker
    object that registered a worker (:meth:`Consumer.register_worker
    <qw_core.broker.Consumer.register_worker>`) is that worker's session, until it
    deregisters the worker or is closed; every broker object that called :meth:`beat` for
    a manager is one of that manager's sessions, until it deregisters the manager or is
    closed. A session *ends* when its process is gone without doing either and the backend
    sees its connection close (the process was killed; a host lost outright may close
    nothing, and is judged by heartbeats). Then:

    * A worker whose session has ended, and all of whose manager's sessions have ended
      too, is dead: the next :meth:`reap` recovers it, its heartbeat lapsed or not. The
      check is atomic with the move, as for a lapsed heartbeat.
    * A worker of a manager with a session still open is left to that manager, which saw
      its process exit and settles it at once, knowing more than a reaper (the job it was
      running, the ones that had succeeded, a job that overran its time limit).
    * A session still open never makes anyone dead: a stopped process (SIGSTOP, a
      debugger) keeps its connection, and is reaped when its heartbeat lapses, as on a
      backend without sessions.
    * A connection lost and opened again (a network fault, a server that closed it) opens
      the session again before the broker does anything else. Until then the session has
      ended: a fault that cut a live manager's sessions and its worker's off at once may
      have that worker reaped, its jobs run twice (never lost: every settle call is
      guarded, see :class:`~qw_core.broker.Consumer`).
    * A session the backend could not open (an error, an option that turns sessions off,
      a worker registered by an older version) never makes anyone dead early: that
      worker is judged by its heartbeat alone.
    """

    @abc.abstractmethod
    def register_manager(self, name: str) -> None:
        """Announce that manager ``name`` is running (idempotent)."""

    @abc.abstractmethod
    def deregister_manager(self, name: str) -> None:
        """Announce that manager ``name`` has stopped (idempotent); deletes its heartbeat."""

    @abc.abstractmethod
    def beat(
        self,
        *,
        manager: str,
        token: str,
        workers: Mapping[str, str],
        ttl: float,
        running: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, str | None]:
        """Say that ``manager`` and ``workers`` are alive for ``ttl`` more seconds.

        One atomic step: each name's heartbeat is set to its token (unique to one start
        of that process) and expires ``ttl`` seconds later unless refreshed; the manager
        is registered (and becomes one the reapers look after) and so is each worker
        (again, if a reaper removed it while it was paused). With
        ``capabilities.session_liveness``, this broker object becomes one of the
        manager's sessions (see the class's docstring).

        :param workers: worker name → token.
        :param running: for each worker, the jobs it has in hand and since when (job id →
            seconds since the epoch), kept as long as its heartbeat (replacing what the
            last beat said) for :meth:`Inspector.job_status`; ``None`` changes nothing of it.
        :return: the names whose heartbeat was not this token, each with the token it had
            (``None``: it had lapsed or never existed): a process paused past its TTL,
            whose jobs a reaper may have handed to others, or another process using the
            same name.
        """

    @abc.abstractmethod
    def reap(
        self,
        *,
        owner: str,
        lease: float,
        ttl: float,
        max_recoveries: int | None = 3,
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[Reaped] | None:
        """Recover every worker whose heartbeat has lapsed, as :meth:`Consumer.recover_worker` does.

        With ``capabilities.session_liveness``, also every worker whose session and whose
        manager's sessions have all ended (see the class's docstring), without waiting for
        its heartbeat to lapse.

        Looks only at managers that have called :meth:`beat` (a process speaking the
        original protocol without heartbeats is never reaped). Checking that a worker is
        dead and moving its jobs is one atomic step (per batch, for a long
        list, each batch checking again), so a worker that beats again is left alone and
        concurrent reapers move each job once. A manager whose heartbeat is gone and that
        has no worker left is deregistered.

        :param owner: this reaper's token.
        :param lease: throttle: if another owner ran a reap less than ``lease`` seconds
            ago, do nothing and return ``None``; ``0`` always runs.
        :param ttl: the heartbeat TTL: a backend that can tell that its server restarted
            less than ``ttl`` seconds ago (so heartbeats may have lapsed while nobody
            could write them) judges nobody dead and returns ``None``.
        :param max_recoveries: as for :meth:`Consumer.recover_worker`.
        :param limits: as for :meth:`Consumer.recover_worker`.
        :return: the workers recovered, or ``None`` if this reaper did not run.
        """

    def note_jobs_run(self, *, manager: str, count: int) -> None:
        """Add ``count`` to the jobs ``manager``'s workers began in the current minute, by
        the backend's clock (so hosts whose clocks disagree count in the same minutes).

        A manager calls this with each heartbeat, with how many jobs its workers began
        since the last call (it reads the counters its workers keep in shared memory): one
        write per heartbeat, never one per job. A backend keeps the counts for an hour at
        least, and forgets them after a day at most. Not atomic with anything; a call
        retried after a timeout may count twice (these are statistics).

        This default keeps nothing: a backend that keeps counts declares
        ``capabilities.throughput`` and overrides this and :meth:`Inspector.jobs_run`.

        :raises ValueError: ``count`` is negative.
        """
        if count < 0:
            raise ValueError(f"a count of jobs run must not be negative, not {count}")
