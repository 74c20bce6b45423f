"""Serving the dashboard with uvicorn: :func:`serve`, what ``qw dashboard`` runs."""

from __future__ import annotations

from collections.abc import Callable

from qw_core.broker import Administrator
from qw_core.dashboard.app import create_app
from qw_core.dashboard.security import Auth, check_host

#: Where the dashboard listens unless told otherwise (rq-dashboard's port).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9181


def serve(
    factory: Callable[[], Administrator],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    auth: Auth | None = None,
    read_only: bool = False,
    log_level: str = "info",
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C, SIGTERM).

    :raises ConfigurationError: ``host`` is not a loopback address and ``auth`` requires
        nothing (see :func:`qw_core.dashboard.security.check_host`).
    """
    auth = auth or Auth()
    check_host(host, auth)
    import uvicorn  # noqa: PLC0415 - the server only when serving

    app = create_app(factory, auth=auth, read_only=read_only)
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False, server_header=False)
