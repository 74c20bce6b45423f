"""The names the PostgreSQL backend accepts for managers, workers and queues.

Names are kept in ``text`` columns, so PostgreSQL itself refuses little (a NUL character,
which the shared checks refuse anyway). The backend keeps qw's portable rules
(:data:`~qw_core.namerules.PORTABLE`: no ``:``, not ``all``, ``job`` or ``qw``, at most 200
characters) by choice, not by need: a name accepted here then works on every backend, so
moving managers between Redis and PostgreSQL never strands a queue under a name the other
refuses. Relaxing them is a decision for this module alone.
"""

from __future__ import annotations

from qw_core.namerules import PORTABLE

#: The rules :func:`check_name` applies.
NAME_RULES = PORTABLE


def check_name(name: str) -> str:
    """Return ``name`` if it can name a manager, worker or queue here (:data:`NAME_RULES`).

    :raises InvalidName: with a one-line reason.
    """
    return NAME_RULES.check(name)
