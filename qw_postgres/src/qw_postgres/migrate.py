"""Applying the schema's migrations (:mod:`qw_postgres.schema`): safely, once, or never.

Applying runs in one transaction that first takes ``pg_advisory_xact_lock`` on the
schema's name, then reads the version again: of several managers that start at once on
an empty database, one creates the schema and the others, once it commits, find it done.
A crash half-way leaves nothing (PostgreSQL's DDL is transactional).
"""

from __future__ import annotations

from typing import Any

import psycopg

from qw_core.errors import ConfigurationError
from qw_postgres.schema import LATEST, MIGRATION_LOCK, Migration, ledger_sql, pending

Connection = psycopg.Connection[Any]


class SchemaTooNew(ConfigurationError):
    """The schema was made by a newer qw-postgres than this one: it is not touched."""


class SchemaNotReady(ConfigurationError):
    """The schema is missing or old, and this process may not migrate it (``migrate=false``)."""


def current_version(conn: Connection, schema: str) -> int:
    """The version of ``schema`` (0: it has none of qw's tables)."""
    [found] = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{schema}.qw_migrations"]).fetchone() or [
        False
    ]
    if not found:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {schema}.qw_migrations").fetchone()
    return int(row[0]) if row else 0


def check_version(version: int, schema: str, shown: str) -> None:
    """:raises SchemaTooNew: ``version`` is newer than this code knows."""
    if version > LATEST:
        raise SchemaTooNew(
            f"the qw schema {schema!r} at {shown} is at version {version}, made by a newer qw-postgres "
            f"than this one (which knows versions up to {LATEST}): upgrade qw-postgres here"
        )


def ensure(conn: Connection, schema: str, shown: str, *, allowed: bool) -> list[Migration]:
    """Bring ``schema`` up to date if it is not, when ``allowed``; the migrations applied.

    :raises SchemaTooNew: the schema is newer than this code.
    :raises SchemaNotReady: it is missing or old and not ``allowed``.
    """
    version = current_version(conn, schema)
    check_version(version, schema, shown)
    if version == LATEST:
        return []
    if not allowed:
        raise SchemaNotReady(
            f"the qw schema {schema!r} at {shown} is at version {version}, this qw-postgres needs "
            f"{LATEST}: run qw migrate --backend postgres (this URL says migrate=false)"
        )
    return apply(conn, schema, shown)


def apply(conn: Connection, schema: str, shown: str) -> list[Migration]:
    """Apply the migrations ``schema`` lacks, under the migration lock; those applied."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [MIGRATION_LOCK, schema])
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(ledger_sql(schema))
        version = current_version(conn, schema)
        check_version(version, schema, shown)
        done = pending(version)
        for migration in done:
            conn.execute(migration.text(schema).encode())
            conn.execute(
                f"INSERT INTO {schema}.qw_migrations (version, description) VALUES (%s, %s)",
                [migration.version, migration.description],
            )
    return done
