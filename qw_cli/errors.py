"""Turning failures into one line on stderr, never a traceback.

Every error qw raises on purpose is a :class:`~qw_core.errors.QwError` whose message is
already one readable line; this module only prefixes it (``qw: error: ...``) and, for an
unreachable broker, adds what to do about it. Anything else that escapes a command is a
bug or an unexpected driver error: it is still reported in one line, and ``QW_DEBUG=1``
shows its traceback.
"""

from __future__ import annotations

import os
import re
from typing import IO, Any

import click

from qw_core.errors import BrokerUnavailable, QwError

#: What ``qw`` suggests when the broker cannot be reached.
UNREACHABLE_HINT = (
    "start Redis, or pass --url (or QW_URL) with the right address and password, "
    "or try qw without Redis: qw run --embedded TARGET"
)


#: The longest word (a run without spaces) a message shows whole.
LONGEST_WORD = 200
_LONG_WORD = re.compile(rf"\S{{{LONGEST_WORD + 1},}}")


def shortened(text: str) -> str:
    """``text`` with each word longer than :data:`LONGEST_WORD` cut to its start and its
    length (``abcd...[10240 characters]``): an id, a name or a value of 10 KB given by
    mistake is not echoed whole."""
    return _LONG_WORD.sub(lambda word: f"{word.group()[:60]}...[{len(word.group())} characters]", text)


class CliError(click.ClickException):
    """A failure reported as ``<prog>: error: <message>`` with exit code 1 (its long words
    :func:`shortened`)."""

    def __init__(self, message: str, *, prog: str = "qw") -> None:
        super().__init__(shortened(message))
        self.prog = prog

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"{self.prog}: error: {self.format_message()}", file=file, err=file is None)


def one_line(text: str) -> str:
    """``text`` folded onto one line (a driver's message may span several)."""
    return " ".join(text.split())


def describe(exc: Exception, *, hint: str = UNREACHABLE_HINT) -> str:
    """The one-line message for ``exc``, with ``hint`` added for an unreachable broker."""
    if isinstance(exc, BrokerUnavailable):
        # A backend may say what to do itself (the PostgreSQL backend's "create the
        # database", say); else the hint of the command, which speaks of Redis.
        own = getattr(exc, "hint", None)
        return f"{one_line(str(exc))}; {own if isinstance(own, str) and own else hint}"
    if isinstance(exc, QwError):
        return one_line(str(exc)) or type(exc).__name__
    detail = one_line(str(exc))
    what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return f"unexpected {what} (set QW_DEBUG=1 to see the traceback)"


def translate(exc: Exception, *, prog: str = "qw", hint: str = UNREACHABLE_HINT) -> CliError:
    """A :class:`CliError` for ``exc``; re-raises ``exc`` itself when ``QW_DEBUG`` is set
    and it is not one of qw's own errors (so the traceback can be read)."""
    if not isinstance(exc, QwError) and os.environ.get("QW_DEBUG"):
        raise exc
    return CliError(describe(exc, hint=hint), prog=prog)
