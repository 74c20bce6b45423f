"""The qw web dashboard (``qw dashboard``; the ``qw-core[dashboard]`` extra).

Operators see queues, workers, throughput, jobs and failures, and requeue or delete failed
jobs, from a browser. It reads and acts through the :class:`~qw_core.broker.Administrator`
role only (an Inspector that may also requeue and delete), so it works on every backend,
and every page reads bounded ranges.

* :func:`create_app`: the ASGI application, to serve or mount (Starlette, Jinja2);
* :func:`wsgi_app`: the same for a WSGI server or application (through ``a2wsgi``);
* :func:`serve`: run it with uvicorn, as ``qw dashboard`` does;
* :class:`Auth`: the credentials it asks for.

Importing this package needs the extra: ``pip install 'qw-core[dashboard]'``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qw_core.broker import Administrator
from qw_core.dashboard.app import create_app
from qw_core.dashboard.security import Auth, check_host, is_loopback
from qw_core.dashboard.server import serve
from qw_core.errors import ConfigurationError

__all__ = ["Auth", "check_host", "create_app", "is_loopback", "serve", "wsgi_app"]


def wsgi_app(factory: Callable[[], Administrator], **options: Any) -> Any:
    """The dashboard as a WSGI application (for gunicorn's sync workers, or to mount in a
    Flask or Django application), through the ``a2wsgi`` adapter.

    A WSGI worker serves one request at a time, so the live regions do not hold it with a
    stream: each refresh is a short request of its own (``stream=False``), every
    ``live_every`` seconds. ``options`` are :func:`create_app`'s.

    :raises ConfigurationError: ``a2wsgi`` is not installed.
    """
    try:
        from a2wsgi import ASGIMiddleware  # noqa: PLC0415 - optional, for WSGI only
    except ImportError as exc:
        raise ConfigurationError("the dashboard under WSGI needs a2wsgi: pip install a2wsgi") from exc
    options.setdefault("stream", False)
    return ASGIMiddleware(create_app(factory, **options))  # type: ignore[arg-type]
