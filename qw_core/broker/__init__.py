"""The backend boundary: the roles a broker plays, and :class:`Broker`, which is all of them.

A broker only moves data. It never fires hooks, applies retry policy or loads targets:
the worker and manager do that above it, so a new backend cannot forget to (dramatiq's
Redis broker emits its own events, which every broker must then remember to do).

The model is the original qw's, generalised:

* a **shared queue** any worker may take from (``all:jobs`` in Redis), and **named
  queues** a worker serves by priority;
* one **manager queue** per manager, taken from only by that manager's workers, before
  the shared queue (``<m>:jobs``);
* one **held list** per worker (``<w>:jobs``): a job is on it from the moment the worker
  takes it until it is finished, failed, retried or released. Jobs may also be queued on
  a held list directly; a worker takes those first.

The interface is split by who calls it, one module per role, so that each caller is typed
against the narrowest one it needs and a backend author reads one contract at a time:

* :class:`Producer`: queue jobs (now, delayed, unique) and read their results
  (a :class:`~qw_core.tasks.Router`, ``qw enqueue``, ``qw result``);
* :class:`Consumer`: a worker's session: register, take, settle, give back what is left
  (the worker loop; the manager on behalf of a worker that died or overran);
* :class:`Membership`: managers' registration, heartbeats and the reaper (the manager's
  heartbeat and reaper threads);
* :class:`Inspector`: read-only listings, counts and statuses (``qw status``, ``qw job``,
  the dashboard, the metrics scrape);
* :class:`Administrator`: requeue or purge failed jobs, move jobs off stray queues,
  migrate a schema (``qw failed``, ``qw move``, ``qw migrate``, the dashboard's buttons);
  an Inspector too, since an administrator reads what it acts on;
* :class:`Periodic`: the backend's clock and periodic jobs' ticks, optional (the
  manager's scheduler).

Each role subclasses :class:`Role` (capabilities, name checks, ``close``, ``with``).

Every method is designed so that a networked backend can serve it in one round trip:
:meth:`Consumer.take` finishes the jobs a worker just completed and takes the next ones in
the same call. Whatever a worker holds when it dies stays on its held list until
:meth:`Consumer.recover_worker` (or a reaper, :meth:`Membership.reap`) puts it back, so no
job is lost to a crash.

Differences between backends are declared in :class:`Capabilities`, never discovered
with ``isinstance``.
"""

from __future__ import annotations

from qw_core.broker.administrator import Administrator
from qw_core.broker.broker import Broker, BrokerFactory
from qw_core.broker.checks import MAX_DELAY, MAX_MINUTES, check_delay, check_listed, check_minutes, check_page
from qw_core.broker.consumer import Consumer
from qw_core.broker.inspector import Inspector
from qw_core.broker.membership import Membership, Reaped
from qw_core.broker.periodic import Periodic
from qw_core.broker.producer import Producer
from qw_core.broker.role import Capabilities, Role

__all__ = [
    "MAX_DELAY",
    "MAX_MINUTES",
    "Administrator",
    "Broker",
    "BrokerFactory",
    "Capabilities",
    "Consumer",
    "Inspector",
    "Membership",
    "Periodic",
    "Producer",
    "Reaped",
    "Role",
    "check_delay",
    "check_listed",
    "check_minutes",
    "check_page",
]
