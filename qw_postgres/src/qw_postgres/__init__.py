"""qw's PostgreSQL backend.

:class:`~qw_postgres.broker.PostgresBroker` is the backend (entry point ``postgres`` in the
``qw.backends`` group); :func:`enqueue` queues jobs inside a transaction of your own.

Each name is imported on first use (PEP 562), so ``import qw_postgres`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qw_postgres.broker import PostgresBroker
    from qw_postgres.connection import PostgresUnavailable
    from qw_postgres.enqueue import enqueue
    from qw_postgres.migrate import SchemaNotReady, SchemaTooNew

#: Each public name and the module it comes from.
_EXPORTS = {
    "PostgresBroker": "qw_postgres.broker",
    "PostgresUnavailable": "qw_postgres.connection",
    "SchemaNotReady": "qw_postgres.migrate",
    "SchemaTooNew": "qw_postgres.migrate",
    "enqueue": "qw_postgres.enqueue",
}

__all__ = ["PostgresBroker", "PostgresUnavailable", "SchemaNotReady", "SchemaTooNew", "enqueue"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (see :data:`_EXPORTS`)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qw_postgres' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
