"""What every role of a broker shares: its capabilities, its name rules, its lifetime.

Each role (:mod:`qw_core.broker.producer`, :mod:`~qw_core.broker.consumer` and the
others) subclasses :class:`Role`, so code typed against one role can still check a name,
describe the backend in a log line, open another broker for another thread, and close it
(a role object is a context manager that closes on exit).
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import attrs

if TYPE_CHECKING:
    from qw_core.broker.broker import BrokerFactory

_R = TypeVar("_R", bound="Role")


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a backend can do, for the core and the contract tests to consult.

    Each optional part of the contract is declared here: a backend that leaves a flag
    false keeps the default of the methods it covers, which refuse or keep nothing, and
    the contract suite skips the tests of that part.

    :param multi_host: managers on different hosts may share the broker.
    :param max_take: the largest batch :meth:`Consumer.take <qw_core.broker.Consumer.take>`
        will hand back in one call.
    :param delayed: the broker keeps delayed jobs itself: :meth:`Producer.queue_jobs
        <qw_core.broker.Producer.queue_jobs>` and :meth:`Consumer.retry_job
        <qw_core.broker.Consumer.retry_job>` honour a delay (without it, ``queue_jobs``
        refuses one).
    :param shared_by_url: another process opening :meth:`Broker.from_url
        <qw_core.broker.Broker.from_url>` sees the same jobs (false for the in-memory
        backend, whose jobs live in one process), so a command such as ``qw enqueue`` can
        refuse instead of queuing into nowhere.
    :param schedules: the broker keeps periodic jobs' ticks (:class:`~qw_core.broker.Periodic`):
        managers may run schedules on it.
    :param throughput: the broker keeps the counts of :meth:`Membership.note_jobs_run
        <qw_core.broker.Membership.note_jobs_run>`, and :meth:`Inspector.jobs_run
        <qw_core.broker.Inspector.jobs_run>` reads them back (without it, the first does
        nothing and the second returns ``[]``: a dashboard says the backend keeps none).
    :param migrations: the backend keeps a schema of its own on its server, which
        :meth:`Administrator.apply_migrations <qw_core.broker.Administrator.apply_migrations>`
        creates and upgrades (``qw migrate``) and :meth:`Administrator.migration_script
        <qw_core.broker.Administrator.migration_script>` prints; without it, there is
        nothing to migrate.
    :param unique: the broker keeps unique jobs (:meth:`Producer.queue_jobs_unique
        <qw_core.broker.Producer.queue_jobs_unique>`), and ``queue_jobs`` honours a job's
        ``meta["unique"]``.
    :param registered_managers: a settle call on a job queued straight onto a worker's
        list that the worker never took sends it to the queue of the manager the worker
        registered under, which the broker looks up, whatever the worker's name (see
        :class:`~qw_core.broker.Consumer`, "Where a job goes back"); without it, the
        backend may read the manager from the worker's name, or use the shared queue.
    :param session_liveness: the broker knows, besides heartbeats, when a process's
        session with it has ended (PostgreSQL: a lock held by the connection, which the
        server drops with it), and :meth:`Membership.reap
        <qw_core.broker.Membership.reap>` recovers a worker whose session and whose
        manager's sessions have all ended without waiting for its heartbeat to lapse
        (see :class:`~qw_core.broker.Membership` for what a session is). Without it, a
        worker whose manager died too is recovered when its heartbeat lapses.
    """

    multi_host: bool
    max_take: int = 100
    delayed: bool = True
    shared_by_url: bool = True
    schedules: bool = False
    throughput: bool = False
    migrations: bool = False
    unique: bool = False
    registered_managers: bool = False
    session_liveness: bool = False


class Role(abc.ABC):
    """The base of every role: what any caller of a broker may use, whatever its role.

    Names: manager, worker and queue names are checked with :meth:`check_name` before
    anything is written. Each backend owns its rules (what its keys, subjects or columns
    can hold); the in-memory backend applies the strictest of qw's backends, so that tests
    catch a name a server would refuse.

    Thread safety: one broker object serves one thread. Open another (through
    :meth:`factory`) for another thread or process.

    Lifetime: ``with`` closes the broker on exit (:meth:`close`), whatever role the
    caller uses it in.
    """

    #: Set by each backend class.
    capabilities: Capabilities

    @abc.abstractmethod
    def factory(self) -> BrokerFactory:
        """A picklable callable that opens an equivalent broker (in any process)."""

    @abc.abstractmethod
    def check_name(self, name: str) -> str:
        """Return ``name`` if it is a valid manager or worker name.

        :raises InvalidName: with a one-line reason.
        """

    def close(self) -> None:  # noqa: B027 - optional hook for backends holding resources
        """Release connections; the broker is not used afterwards."""

    def describe(self) -> str:
        """A one-line, password-free description for logs (``redis://host:6379/0``)."""
        return type(self).__name__

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
