"""``qw dashboard``: serve the web dashboard (the ``qw-core[dashboard]`` extra)."""

from __future__ import annotations

import os

import click

from qw_cli.errors import CliError
from qw_cli.options import backend_options, opened_broker

#: What to install when the extra is missing.
EXTRA_HINT = "the dashboard needs its extra: pip install 'qw-core[dashboard]'"


@click.command(short_help="Serve the web dashboard.")
@backend_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    metavar="ADDRESS",
    help="Listen on this address; any but a loopback one needs QW_DASHBOARD_TOKEN or "
    "QW_DASHBOARD_USER and QW_DASHBOARD_PASSWORD.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=9181, show_default=True, help="Listen on this port."
)
@click.option("--read-only", is_flag=True, help="Show, never act: no requeue or delete.")
def dashboard(*, backend: str, url: str | None, host: str, port: int, read_only: bool) -> None:
    """Serve the web dashboard: queues, workers, throughput, jobs, failed jobs (requeue,
    delete), delayed jobs and schedules, updated live, at http://127.0.0.1:9181/.

    It listens on 127.0.0.1 unless told otherwise; on any other address it refuses to
    start without authentication, read from the environment (never from the command line):
    QW_DASHBOARD_TOKEN (sent as "Authorization: Bearer TOKEN", or typed into its login
    page), or QW_DASHBOARD_USER and QW_DASHBOARD_PASSWORD (HTTP basic auth), or both.
    Every action is a form POST checked against cross-site requests, and asks for
    confirmation; --read-only shows the actions to nobody.

    Needs the extra: pip install 'qw-core[dashboard]'.
    """
    try:
        from qw_core.dashboard import Auth, check_host, serve
    except ImportError as exc:
        raise CliError(f"{EXTRA_HINT} ({exc.name or exc} is missing)") from exc

    auth = Auth.from_env(os.environ)
    check_host(host, auth)
    with opened_broker(backend, url) as broker:  # reachable, and shared with other processes
        factory = broker.factory()
        described = broker.describe()
    shown = f"[{host}]" if ":" in host else host
    access = "read-only, " if read_only else ""
    access += "authentication required" if auth.required else "no authentication"
    click.echo(
        f"Serving the dashboard of {described} on http://{shown}:{port}/ ({access}); Ctrl-C stops it",
        err=True,
    )
    serve(factory, host=host, port=port, auth=auth, read_only=read_only, log_level="warning")
