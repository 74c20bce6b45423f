"""The traceback text a failed job keeps, at a fraction of the standard formatter's cost.

On Python 3.11 and later, ``traceback.format_exception`` locates the expression of every
frame and parses its source line to draw ``^^^^`` under it: about a quarter of a
millisecond for the frames of a job that raised, several times what running a no-op job
costs, so a flood of failing jobs drained more than ten times slower than succeeding
ones. :func:`format_exception` writes the same text without those marker lines: every
frame with its source line, the exception, its notes, and the exceptions it was raised
from or while handling. An exception group (rare, and nested) gets the standard text:
Python's own (3.11+), or on 3.10 the ``exceptiongroup`` backport's, which anyio and trio
raise there and whose import teaches ``traceback`` to print its members.
"""

from __future__ import annotations

import builtins
import re
import sys
import traceback

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
#: ``BaseExceptionGroup`` where Python has it (3.11+).
_BUILTIN_GROUP = getattr(builtins, "BaseExceptionGroup", None)


def _group_types() -> tuple[type, ...]:
    """The exception group classes there are: Python's, and the backport's once something
    imported it (looked up per failure: a job may import it after qw started)."""
    backport = getattr(sys.modules.get("exceptiongroup"), "BaseExceptionGroup", None)
    return tuple(kind for kind in (_BUILTIN_GROUP, backport) if isinstance(kind, type))


def format_exception(exc: BaseException) -> str:
    """``exc`` and the exceptions chained to it, as ``traceback.format_exception`` writes
    them, less the lines that only mark a frame's expression (``^^^^``)."""
    groups = _group_types()
    chain: list[tuple[BaseException, str]] = []  # (exception, what links it to the next)
    seen: set[int] = set()
    link = ""
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, groups):
            chain.append((current, link))
            break
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts: list[str] = []
    for error, link in reversed(chain):  # the oldest first, as Python prints them
        if isinstance(error, groups):
            parts.extend(traceback.format_exception(type(error), error, error.__traceback__))
        else:
            if error.__traceback__ is not None:
                parts.append("Traceback (most recent call last):\n")
                frames = traceback.walk_tb(error.__traceback__)
                # Source lines are read as each frame is formatted, from linecache's copy:
                # no stat of every file per failure (what lookup_lines=True adds).
                parts.extend(traceback.StackSummary.extract(frames, lookup_lines=False).format())
            parts.extend(traceback.format_exception_only(type(error), error))
        parts.append(link)
    return "".join(parts)


#: Parts of a path that mark a frame as qw's or pluggy's, not the user's.
_OWN_FRAMES = re.compile(r'^  File "[^"]*[/\\](?:qw_core|pluggy)[/\\]')


def user_frames(traceback: str) -> str:
    """``traceback`` without the frames of qw and pluggy (the worker, the hook machinery,
    the built-in runner): what a user reads first is their own code. Unchanged if nothing
    else would be left (a failure inside qw itself)."""
    kept: list[str] = []
    skipping = False
    for line in traceback.splitlines(keepends=True):
        if line.startswith('  File "'):
            skipping = bool(_OWN_FRAMES.match(line))
        elif not line.startswith("    "):
            skipping = False
        if not skipping:
            kept.append(line)
    if not any(line.startswith('  File "') for line in kept):
        return traceback
    return "".join(kept)
