"""Which event loop runs an ``async def`` target's jobs: the standard library's or uvloop.

A worker running an async target keeps many jobs in flight on one event loop (see
:class:`~qw_core.execution.AsyncioExecutor`), and with jobs that mostly wait, that loop's
own cost per timer, socket read and task switch is most of what a job costs in CPU.
uvloop (libuv, written in Cython) does the same work for less: measured here with qw's
I/O benchmark (jobs that wait 20 ms, then ``INCR`` on an asyncio Redis client, 100 in
flight), the event loop's CPU a job went from 84-96 µs to 73-75 µs, and the drain of two
worker processes rose by a fifth to a half (the harness, ``bench/run.py --io 20``).

The choice, as uvicorn and taskiq make it: ``"auto"`` (the default) uses uvloop when it is
installed (``pip install 'qw-core[uvloop]'``) and the standard loop otherwise;
``"asyncio"`` always the standard one (a target that relies on something uvloop does
differently); ``"uvloop"`` insists, and a worker refuses to start without it. Plain
function targets have no event loop, and ignore it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

from qw_core.errors import ConfigurationError

#: The choices, as ``qw run --event-loop`` names them.
EVENT_LOOPS = ("auto", "asyncio", "uvloop")
DEFAULT_EVENT_LOOP = "auto"

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _uvloop_factory() -> LoopFactory | None:
    """uvloop's ``new_event_loop``, or ``None`` when uvloop is not installed (or does not
    import: it has no build for every platform)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def check_event_loop(name: str) -> str:
    """``name`` if it is a choice this process can honour.

    :raises ConfigurationError: an unknown name, or ``"uvloop"`` without uvloop installed.
    """
    if name not in EVENT_LOOPS:
        raise ConfigurationError(f"unknown event loop {name!r}: choose one of {', '.join(EVENT_LOOPS)}")
    if name == "uvloop" and _uvloop_factory() is None:
        raise ConfigurationError(
            "the uvloop event loop was asked for but uvloop is not installed: "
            "pip install 'qw-core[uvloop]', or choose --event-loop auto or asyncio"
        )
    return name


def loop_factory(name: str) -> LoopFactory:
    """What makes the event loop ``name`` stands for (checked as :func:`check_event_loop` does)."""
    if check_event_loop(name) == "asyncio":
        return asyncio.new_event_loop
    return _uvloop_factory() or asyncio.new_event_loop


def event_loop_in_use(name: str) -> str:
    """Which loop ``name`` gives in this process: ``"uvloop"`` or ``"asyncio"`` (for logs)."""
    if check_event_loop(name) == "asyncio" or _uvloop_factory() is None:
        return "asyncio"
    return "uvloop"
