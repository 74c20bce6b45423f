"""``qw migrate``: create or upgrade the schema a backend keeps on its server.

The PostgreSQL backend keeps its tables in a schema it creates and upgrades itself when a
manager starts; a team that runs migrations by hand (or forbids DDL to the application's
user, with ``?migrate=false``) applies them with this command, or prints the SQL with
``--print`` and runs it its own way. A backend without a schema (Redis, memory) has
nothing to migrate, and says so.
"""

from __future__ import annotations

import click

from qw_cli.options import backend_options
from qw_core.backends import load_backend


@click.command(short_help="Create or upgrade the backend's schema (PostgreSQL).")
@backend_options
@click.option(
    "--print",
    "show",
    is_flag=True,
    help="Print the SQL that would bring the schema up to date instead of running it.",
)
def migrate(*, backend: str, url: str | None, show: bool) -> None:
    """Create or upgrade the schema the backend keeps at --url (PostgreSQL: the tables of
    ?schema=NAME, default qw), safely when managers start at the same time.

    Managers apply missing migrations themselves unless the URL says ?migrate=false; a
    schema made by a newer version of the backend is never touched.
    """
    cls = load_backend(backend)
    if not cls.capabilities.migrations:
        click.echo(f"the {backend} backend keeps no schema: there is nothing to migrate", err=True)
        return
    if show:
        text = cls.migration_script(url)
        click.echo(text.rstrip() if text else "-- the schema is up to date: nothing to run")
        return
    applied = cls.apply_migrations(url)
    for line in applied:
        click.echo(line, err=True)
    if not applied:
        click.echo("the schema is up to date", err=True)
