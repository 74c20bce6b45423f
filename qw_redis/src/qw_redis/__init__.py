"""qw's Redis backend, wire-compatible with the original qw 0.1.1 key schema.

:class:`~qw_redis.broker.RedisBroker` is the backend (entry point ``redis`` in the
``qw.backends`` group); on a Redis Cluster its ``from_url`` opens a
:class:`~qw_redis.cluster.ClusterBroker`. :class:`Client`, :class:`Manager` and :class:`Worker` keep the
original qw 0.1.1 API (:mod:`qw_redis.compat`) for programs written against it.

Each name is imported on first use (PEP 562), so ``qw status`` does not import the
manager that :class:`Manager` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qw_redis.broker import RedisBroker
    from qw_redis.cluster import ClusterBroker
    from qw_redis.compat import Client, Manager, Worker
    from qw_redis.connection import RedisOptions, redact_url

#: Each public name and the module it comes from.
_EXPORTS = {
    "Client": "qw_redis.compat",
    "ClusterBroker": "qw_redis.cluster",
    "Manager": "qw_redis.compat",
    "RedisBroker": "qw_redis.broker",
    "RedisOptions": "qw_redis.connection",
    "Worker": "qw_redis.compat",
    "redact_url": "qw_redis.connection",
}

__all__ = ["Client", "ClusterBroker", "Manager", "RedisBroker", "RedisOptions", "Worker", "redact_url"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (see :data:`_EXPORTS`)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qw_redis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
