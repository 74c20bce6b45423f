"""Who holds a manager name: a process identity carried in the manager's heartbeat token.

Two ``qw run`` on one host used to share the default name (the host name) and then fight
over it for ever. A manager now puts in its heartbeat token where it runs
(``<host>:<pid>:<start time>``), so the next one to start under that name can tell at once
whether the holder is alive: on the same host by looking the process up (the start time
tells a reused pid, or a container's pid 1, from the holder), on another host by
watching, for a heartbeat interval, whether the holder's heartbeat is refreshed.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def process_identity(pid: int | None = None) -> str:
    """``<host>:<pid>:<start time>`` of process ``pid`` (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or 0}"


def identity_alive(identity: str) -> bool | None:
    """Whether the process ``identity`` names is running: ``None`` when this host cannot
    tell (another host, or an identity it does not understand)."""
    host, _, start_text = identity.rpartition(":")  # host:pid:start, read from the right
    host, _, pid_text = host.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or not start_text.isdigit():
        return None
    if identity == process_identity():  # another manager in this very process
        return True
    pid = int(pid_text)
    if _start_time(os.getpid()) is None:  # no /proc: a pid that exists is taken as alive
        return _pid_exists(pid)
    start = _start_time(pid)  # a reused pid (a container's pid 1 again) started later
    return start is not None and str(start) == start_text


def _pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc``); ``None`` if it is
    not running (or this is not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return int(fields[19]) if len(fields) > 19 else None
