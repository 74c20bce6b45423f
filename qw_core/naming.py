"""Choosing a manager's name: never one a running manager uses.

A name is a manager's identity in the broker: its queue, its workers' names, its
heartbeat. Two live managers under one name would take each other's workers for dead, so
a manager starting under a name that a running one holds refuses (a name it was given) or
picks the next free one (the default: the host name, then ``<host>-2``, ``<host>-3``...),
so that two ``qw run`` on one host need no thought. A name whose holder is dead (crashed
within its heartbeat TTL) is free: see :mod:`qw_core.identity` for how that is told.
"""

from __future__ import annotations

import socket
import time

from qw_core.broker import Broker
from qw_core.errors import ConfigurationError
from qw_core.identity import identity_alive

#: Default names tried after the host name (``<host>-2`` ... ``<host>-<n>``).
MAX_DEFAULT_NAMES = 20
#: How often a holder on another host is asked about, while watching for a refresh.
_POLL = 0.05


def claim_name(broker: Broker, wanted: str | None, *, heartbeat: float) -> str:
    """The name a new manager starts under: ``wanted``, or a free default.

    :param heartbeat: the heartbeat interval: how long to watch a holder on another host
        for a sign of life (one and a half of them).
    :raises ConfigurationError: ``wanted`` is held by a running manager, or every default is.
    """
    if wanted is not None:
        name = broker.check_name(wanted)
        holder = live_holder(broker, name, watch=1.5 * heartbeat)
        if holder is not None:
            raise ConfigurationError(
                f"manager name {name!r} is in use by a running manager ({holder}); give this one "
                "another name with -n NAME (or QW_NAME), or leave the name out to get a free one"
            )
        return name
    host = broker.check_name(socket.gethostname())
    for name in (host, *(f"{host}-{n}" for n in range(2, MAX_DEFAULT_NAMES + 1))):
        if live_holder(broker, broker.check_name(name), watch=1.5 * heartbeat) is None:
            return name
    raise ConfigurationError(
        f"{MAX_DEFAULT_NAMES} managers run as {host}-N already; give a name with -n NAME"
    )


def live_holder(broker: Broker, name: str, *, watch: float) -> str | None:
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
