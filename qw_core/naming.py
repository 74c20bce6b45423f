"""Choosing a manager's name: never one a running manager uses, nor one its keys share.

A name is a manager's identity in the broker: its queue, its workers' names, its
heartbeat. Two live managers under one name would take each other's workers for dead, so
a manager starting under a name that a running one holds refuses (a name it was given) or
picks the next free one (the default: the host name, then ``<host>-2``, ``<host>-3``...),
so that two ``qw run`` on one host need no thought. A name whose holder is dead (crashed
within its heartbeat TTL) is free: see :mod:`qw_core.identity` for how that is told.

A manager's workers are named ``<manager>.<pid>``, and a worker's keys are spelt like a
manager's (``<name>:jobs``, its heartbeat under its name). So a manager name that ends in
``.<digits>`` (``m.123``) is refused (:func:`check_manager_name`): it is the name of a
worker of manager ``m``, whose list and heartbeat it would share. Any other name keeps
working (``host.example.com``, ``m.1a``, ``v1.2-x``); a host name that ends in ``.<digits>``
gives the default ``<host>-<digits>`` instead.

What any name may be (each backend's rules, and the characters no name may hold) is
:mod:`qw_core.namerules`.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable

from qw_core.broker import Inspector, Role
from qw_core.errors import ConfigurationError, InvalidName
from qw_core.identity import identity_alive
from qw_core.models import DEFAULT_QUEUE

#: The end of a worker's name (``<manager>.<pid>``), which no manager's name may have.
_WORKER_SUFFIX = re.compile(r"\.([0-9]+)\Z")


def check_manager_name(broker: Role, name: str) -> str:
    """Return ``name`` if it can be a manager's name: the backend accepts it
    (:meth:`Role.check_name`), and no worker can have it.

    :raises InvalidName: with a one-line reason.
    """
    name = broker.check_name(name)
    suffix = _WORKER_SUFFIX.search(name)
    if suffix is not None:
        owner = name[: suffix.start()]
        raise InvalidName(
            f"manager name {name!r} ends in '.{suffix.group(1)}', as the name of worker {suffix.group(1)} of "
            f"manager {owner!r} does, whose queue and heartbeat it would share; use another name, "
            f"such as {owner}-{suffix.group(1)}"
        )
    return name


def default_manager_name(broker: Role) -> str:
    """The host name, as a valid manager name (``.<digits>`` at its end becomes ``-<digits>``)."""
    return check_manager_name(broker, _WORKER_SUFFIX.sub(r"-\1", socket.gethostname()))


#: Default names tried after the host name (``<host>-2`` ... ``<host>-<n>``).
MAX_DEFAULT_NAMES = 20
#: How often a holder on another host is asked about, while watching for a refresh.
_POLL = 0.05


def claim_name(broker: Inspector, wanted: str | None, *, heartbeat: float) -> str:
    """The name a new manager starts under: ``wanted``, or a free default.

    :param heartbeat: the heartbeat interval: how long to watch a holder on another host
        for a sign of life (one and a half of them).
    :raises ConfigurationError: ``wanted`` is held by a running manager, or every default is.
    """
    if wanted is not None:
        name = check_manager_name(broker, wanted)
        holder = live_holder(broker, name, watch=1.5 * heartbeat)
        if holder is not None:
            raise ConfigurationError(
                f"manager name {name!r} is in use by a running manager ({holder}); give this one "
                "another name with -n NAME (or QW_NAME), or leave the name out to get a free one"
            )
        return name
    host = default_manager_name(broker)
    for name in (host, *(f"{host}-{n}" for n in range(2, MAX_DEFAULT_NAMES + 1))):
        if live_holder(broker, check_manager_name(broker, name), watch=1.5 * heartbeat) is None:
            return name
    raise ConfigurationError(
        f"{MAX_DEFAULT_NAMES} managers run as {host}-N already; give a name with -n NAME"
    )


def live_holder(broker: Inspector, name: str, *, watch: float) -> str | None:
    """Who holds ``name`` and is alive, described for a message; ``None`` if nobody is."""
    found = broker.heartbeat_of(name)
    if found is None:
        return None
    token, left = found
    identity = token.partition("@")[2]
    alive = identity_alive(identity) if identity else None
    where = identity.rsplit(":", 2)[0] if identity else "another process"
    if alive is not None:
        return f"pid {identity.rsplit(':', 2)[1]} on {where}" if alive else None
    # On another host (or an older qw): alive if its heartbeat is refreshed meanwhile.
    deadline = time.monotonic() + min(watch, left)
    while time.monotonic() < deadline:
        time.sleep(_POLL)
        now = broker.heartbeat_of(name)
        if now is None:
            return None
        if now[0] != token or now[1] > left:
            return f"on {where}, beating"
        left = now[1]
    return None


def check_queues(broker: Role, queues: Iterable[str] | None) -> tuple[str, ...]:
    """The named queues a worker serves, by priority, checked: each name as ``broker``
    checks a manager's (:data:`~qw_core.models.DEFAULT_QUEUE` is the shared queue); none
    given serves the shared queue alone.

    :raises ConfigurationError: a name that cannot be a queue's, or one given twice.
    """
    served = tuple(queues or ()) or (DEFAULT_QUEUE,)
    for queue in served:
        if queue == DEFAULT_QUEUE:
            continue
        try:
            broker.check_name(queue)
        except InvalidName as exc:
            raise ConfigurationError(f"queue {queue!r} cannot be served: {exc}") from None
    twice = sorted({queue for queue in served if served.count(queue) > 1})
    if twice:
        raise ConfigurationError(
            f"queue {twice[0]!r} is given twice; give each queue once, in priority order"
        )
    return served
