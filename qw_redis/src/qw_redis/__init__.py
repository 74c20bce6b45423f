"""qw's Redis backend, wire-compatible with the original qw 0.1.1 key schema.

:class:`~qw_redis.broker.RedisBroker` is the backend (entry point ``redis`` in the
``qw.backends`` group). :class:`Client`, :class:`Manager` and :class:`Worker` keep the
original qw 0.1.1 API (:mod:`qw_redis.compat`) for programs written against it.
"""

from __future__ import annotations

from qw_redis.broker import RedisBroker
from qw_redis.compat import Client, Manager, Worker
from qw_redis.connection import RedisOptions, redact_url

__all__ = ["Client", "Manager", "RedisBroker", "RedisOptions", "Worker", "redact_url"]
