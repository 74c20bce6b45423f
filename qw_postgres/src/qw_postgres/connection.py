"""Opening PostgreSQL: the URL's own settings, the connection, and its errors as one line.

A URL is libpq's (``postgresql://user:password@host:5432/dbname?sslmode=require``) with
two settings of qw's own in its query, which are taken out before libpq sees it:

* ``schema=NAME``: the schema that holds qw's tables (default ``qw``);
* ``migrate=false``: never create or upgrade the schema from this process (a schema that
  is missing or old is then an error that says to run ``qw migrate``);
* ``liveness=heartbeats``: take no session locks, so that the workers and managers of this
  URL are judged dead by their heartbeats alone (behind a pooler that shares server
  connections between clients, see :mod:`qw_postgres.sessions`); the default,
  ``liveness=sessions``, takes them.

Errors. Whatever psycopg says when a connection cannot be made is turned into one line
naming the server (its password hidden) and what to do: the server does not answer, the
login was refused, the database does not exist. They are :class:`PostgresUnavailable`
(a :class:`~qw_core.errors.BrokerUnavailable`), so a running worker waits out a server
that restarts; ``qw`` prints the line with the hint of its kind.
"""

from __future__ import annotations

import re
import urllib.parse

import attrs
import psycopg

from qw_core.errors import BrokerUnavailable, ConfigurationError
from qw_postgres.schema import DEFAULT_SCHEMA, check_schema

#: The URL used when none is given: libpq's defaults (the PG* environment variables,
#: else the local server's socket, as the current user).
DEFAULT_URL = "postgresql://"

#: Seconds a connection attempt may take.
CONNECT_TIMEOUT = 5

#: What to do when the server does not answer (``qw`` adds it to the error's line).
UNREACHABLE_HINT = "start PostgreSQL, or pass --url (or QW_URL) with the right host, port and database"


class PostgresUnavailable(BrokerUnavailable):
    """PostgreSQL cannot be used from here: down, refusing the login, or no such database.

    :param hint: what to do about it, for ``qw`` to print after the message.
    """

    def __init__(self, message: str, *, hint: str = UNREACHABLE_HINT) -> None:
        super().__init__(message)
        self.hint = hint


@attrs.frozen
class Settings:
    """Where and how to connect.

    :param conninfo: the URL as libpq takes it (qw's settings taken out).
    :param shown: the URL for messages and logs, its password hidden.
    :param schema: the schema of qw's tables.
    :param migrate: whether this process may create or upgrade the schema.
    :param sessions: whether this process's brokers take session locks (``liveness=``).
    """

    conninfo: str
    shown: str
    schema: str = DEFAULT_SCHEMA
    migrate: bool = True
    sessions: bool = True


def parse_url(url: str | None) -> Settings:
    """The settings of ``url`` (``None``: :data:`DEFAULT_URL`).

    :raises ConfigurationError: not a ``postgresql://`` or ``postgres://`` URL, or a bad
        ``schema``, ``migrate`` or ``liveness`` value.
    """
    url = url or DEFAULT_URL
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"{redact_url(url)!r} is not a PostgreSQL URL (postgresql://user@host:5432/dbname)"
        )
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema, migrate, sessions, rest = DEFAULT_SCHEMA, True, True, []
    for name, value in query:
        if name == "schema":
            schema = check_schema(value)
        elif name == "migrate":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigurationError(f"migrate must be true or false in the URL, not {value[:40]!r}")
            migrate = value.lower() in ("true", "1", "yes")
        elif name == "liveness":
            if value.lower() not in ("sessions", "heartbeats"):
                raise ConfigurationError(
                    f"liveness must be sessions or heartbeats in the URL, not {value[:40]!r}"
                )
            sessions = value.lower() == "sessions"
        else:
            rest.append((name, value))
    # Percent-encoded as libpq decodes it: urlencode's default writes a space as "+",
    # which libpq keeps (``options=-c%20lock_timeout%3D5s`` would reach the server broken).
    query_rest = urllib.parse.urlencode(rest, quote_via=urllib.parse.quote)
    conninfo = urllib.parse.urlunsplit(parts._replace(query=query_rest))
    return Settings(
        conninfo=conninfo, shown=redact_url(url), schema=schema, migrate=migrate, sessions=sessions
    )


def redact_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` setting) replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        login, _, host = netloc.rpartition("@")
        user, colon, _ = login.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{host}"
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def connect(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    """A new connection in autocommit mode (each statement its own transaction, unless a
    ``with conn.transaction()`` groups some).

    :raises PostgresUnavailable: the server does not answer or refuses the connection.
    :raises ConfigurationError: the URL names a host no resolver takes (a label over 63
        characters, an empty one as in ``a..b``), or holds bytes that are not UTF-8.
    """
    try:
        return psycopg.connect(
            settings.conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="qw",
        )
    except psycopg.Error as exc:
        raise unavailable(exc, settings.shown) from None
    except UnicodeError as exc:  # from the host name's encoding (IDNA), or the URL's (UTF-8)
        raise ConfigurationError(f"invalid PostgreSQL URL {settings.shown}: {exc.__cause__ or exc}") from None


def unavailable(exc: psycopg.Error, shown: str) -> PostgresUnavailable:
    """The one-line error for a connection that could not be made (or was lost)."""
    text = " ".join(str(exc).split())
    detail = text.rsplit("failed: ", 1)[-1]  # libpq's "connection to server at ... failed: WHY"
    detail = re.sub(r"^(FATAL|ERROR):\s*", "", detail)
    detail = detail.split(" Is the server running", 1)[0].strip()
    if match := re.search(r'database "([^"]*)" does not exist', text):
        return PostgresUnavailable(
            f"PostgreSQL at {shown} has no database {match.group(1)!r}",
            hint=f"create it (createdb {match.group(1)}), or pass --url (or QW_URL) with the right database",
        )
    if re.search(r"password authentication failed|role \"[^\"]*\" does not exist|no pg_hba.conf entry", text):
        return PostgresUnavailable(
            f"PostgreSQL at {shown} refused the login: {detail}",
            hint="pass --url (or QW_URL) with a user and password the server accepts",
        )
    if "password" in text and ("no password supplied" in text or "fe_sendauth" in text):
        return PostgresUnavailable(
            f"PostgreSQL at {shown} asks for a password: {detail}",
            hint="give it in QW_URL (postgresql://user:password@host/db) or in ~/.pgpass",
        )
    return PostgresUnavailable(f"PostgreSQL at {shown} does not answer: {detail}")
