"""Where qw's log lines go when nobody said: stderr, one line each.

``qw run`` sets this up from ``--level``; :meth:`qw_core.manager.Manager.run` does it too
when the application has not configured logging itself, so that a manager started from a
script says what it does (without it, Python drops every record below WARNING). An
application that configured logging keeps its own set-up untouched.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

#: Level names (as ``qw run --level`` takes them; ``warn`` as the original had it).
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def configure_logging(level: str) -> None:
    """Send log records at ``level`` and above to stderr, one line each.

    Adds one handler to the root logger (worker processes inherit it when forked) unless
    an earlier call already did.
    """
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(LEVELS[level.lower()])


def configure_unless_configured(level: str = "info") -> bool:
    """:func:`configure_logging`, unless the application gave the root logger or qw's
    logger a handler already; whether it did."""
    if logging.getLogger().handlers or logging.getLogger("qw").handlers:
        return False
    configure_logging(level)
    return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # not subscriptable on 3.10
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as logging's own
    last-resort handler does), so a replaced stderr is never written to after it closed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass
