"""The PostgreSQL backend: :class:`PostgresBroker`.

Jobs are rows of ``<schema>.jobs`` (see :mod:`qw_postgres.schema`): queued, delayed, or
held by a worker. A worker takes them with one call of ``<schema>.take()`` a batch, and
waits for more on ``LISTEN`` (both told in :mod:`qw_postgres.consuming`); liveness is the
manager's heartbeat, in a table (:mod:`qw_postgres.membership`), and the advisory locks of
its connections and its workers', which die with them (:mod:`qw_postgres.sessions`); jobs
can be queued in the caller's own transaction (:mod:`qw_postgres.producing`).

Each role is a module of this package, over one connection (:mod:`qw_postgres.base`):
:mod:`qw_postgres.producing`, :mod:`qw_postgres.consuming`, :mod:`qw_postgres.membership`,
:mod:`qw_postgres.inspecting` and :mod:`qw_postgres.listing` (the inspector's role, in
two), :mod:`qw_postgres.administering` and :mod:`qw_postgres.periodic`. This module
assembles them, and opens the broker from a URL and manages its schema's migrations.
"""

from __future__ import annotations

import attrs
import psycopg

from qw_core.broker import BrokerFactory
from qw_postgres import migrate
from qw_postgres.administering import FAILED_BATCH, MOVE_BATCH, AdministratorPart
from qw_postgres.base import SAFETY_POLL, Connection, _origin, waiting_takes
from qw_postgres.connection import connect, parse_url
from qw_postgres.consuming import ConsumerPart
from qw_postgres.inspecting import InspectorPart
from qw_postgres.listing import ListingPart
from qw_postgres.membership import JOBS_RUN_KEEP, MembershipPart
from qw_postgres.periodic import PeriodicPart
from qw_postgres.producing import QUEUE_BATCH, ProducerPart, insert
from qw_postgres.schema import LATEST, script

__all__ = [
    "FAILED_BATCH",
    "JOBS_RUN_KEEP",
    "MOVE_BATCH",
    "QUEUE_BATCH",
    "SAFETY_POLL",
    "Connection",
    "PostgresBroker",
    "PostgresBrokerFactory",
    "_origin",
    "insert",
    "waiting_takes",
]


@attrs.frozen
class PostgresBrokerFactory:
    """Opens a :class:`PostgresBroker` on the same URL (picklable, for worker processes).

    The schema was checked by the broker that made this factory, so the brokers it opens
    do not check it again.
    """

    url: str | None

    def __call__(self) -> PostgresBroker:
        return PostgresBroker.open(self.url, check_schema=False)

    def __repr__(self) -> str:
        return f"PostgresBrokerFactory({parse_url(self.url).shown!r})"


class PostgresBroker(
    ProducerPart,
    ConsumerPart,
    MembershipPart,
    InspectorPart,
    ListingPart,
    AdministratorPart,
    PeriodicPart,
):
    """Jobs in PostgreSQL (``qw run --backend postgres --url postgresql://...``).

    One object holds one connection, in autocommit mode, opened again after it is lost
    (each call after an outage tries once, and raises
    :class:`~qw_core.errors.BrokerUnavailable` while the server is away).
    """

    @classmethod
    def from_url(cls, url: str | None = None) -> PostgresBroker:
        """Open the PostgreSQL database at ``url``, creating or upgrading qw's schema in it
        unless the URL says ``migrate=false``.

        ``postgresql://user:password@host:5432/dbname?schema=NAME`` (``schema``: where qw's
        tables are, default ``qw``; other settings are libpq's, such as ``sslmode``).
        Default: libpq's defaults (the ``PG*`` environment variables, else the local
        server). Give a password through ``QW_URL`` or ``~/.pgpass``, not on a command line.

        :raises ConfigurationError: the URL is malformed, or the schema is newer than this
            code (or missing with ``migrate=false``).
        :raises BrokerUnavailable: PostgreSQL does not answer, refuses the login, or has no
            such database.
        """
        return cls.open(url, check_schema=True)

    @classmethod
    def open(cls, url: str | None, *, check_schema: bool) -> PostgresBroker:
        """:meth:`from_url`; ``check_schema=False`` trusts that the schema is ready."""
        settings = parse_url(url)
        conn = connect(settings)
        broker = cls(settings, conn, url=url)
        if check_schema:
            try:
                migrate.ensure(conn, settings.schema, settings.shown, allowed=settings.migrate)
            except psycopg.Error as exc:
                conn.close()
                raise broker._error(exc) from exc
            except BaseException:
                conn.close()
                raise
        return broker

    @classmethod
    def apply_migrations(cls, url: str | None = None) -> list[str]:
        """See :meth:`Broker.apply_migrations`: the migrations the schema at ``url`` lacks,
        applied in one transaction under the migration lock (:mod:`qw_postgres.migrate`)."""
        settings = parse_url(url)
        conn = connect(settings)
        try:
            done = migrate.apply(conn, settings.schema, settings.shown)
        except psycopg.Error as exc:
            raise PostgresBroker(settings)._error(exc) from exc
        finally:
            conn.close()
        return [f"schema {settings.schema}: applied version {m.version} ({m.description})" for m in done]

    @classmethod
    def migration_script(cls, url: str | None = None) -> str:
        """See :meth:`Broker.migration_script`: the SQL that brings the schema at ``url``
        from the version it has to this code's, each migration in its own transaction."""
        settings = parse_url(url)
        conn = connect(settings)
        try:
            version = migrate.current_version(conn, settings.schema)
            migrate.check_version(version, settings.schema, settings.shown)
        except psycopg.Error as exc:
            raise PostgresBroker(settings)._error(exc) from exc
        finally:
            conn.close()
        return script(settings.schema, version) if version < LATEST else ""

    def factory(self) -> BrokerFactory:
        return PostgresBrokerFactory(url=self._url)
