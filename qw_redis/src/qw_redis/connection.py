"""Opening Redis connections: URLs, options, password redaction, start-up errors.

A URL is the one way a qw process names its Redis (``qw run --url``), and URLs carry
passwords, so everything here that may end up in a log or an error message goes through
:func:`redact_url` first. A Redis that is down at start-up is reported in one line
(``cannot reach Redis at redis://localhost:6379/0: Connection refused``), never as a
traceback.

A primary that Redis Sentinel manages is named by a ``redis+sentinel://`` URL, which
:mod:`qw_redis.sentinel` reads; everything here takes it wherever it takes a
``redis://`` one.

Transient connection errors are retried by redis-py itself
(:class:`redis.retry.Retry` with :class:`redis.backoff.ExponentialBackoff`), so a Redis
restart or a failover costs a short pause rather than a dead worker. A retried command
may run twice (the first attempt's reply was lost, not its effect), which is why every
script qw sends is idempotent.

Bytes that are not UTF-8. Redis holds bytes; qw talks text. A client qw uses decodes
replies with ``surrogateescape`` (:func:`qw_client`), so a byte that is not UTF-8 becomes
a lone surrogate instead of an exception, and a string holding one is sent back as the
very bytes it came from. One undecodable job, name or key can then never make a reply
unreadable, and the broker decides what it means (a job whose data is not UTF-8 text is
moved to the failed registry, kind ``invalid``) instead of crashing on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import attrs
import redis
import redis.connection  # named, not only reached through redis: type checkers see it
import redis.exceptions
import redis.sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from qw_core import urls
from qw_core.errors import BackendError, BrokerUnavailable, ConfigurationError, QwError
from qw_redis import sentinel
from qw_redis.codec import DEFAULT_MAX_JOB_SIZE

#: The URL used when none is given.
DEFAULT_URL = "redis://localhost:6379/0"
_SCHEMES = ("redis", "rediss", "unix")
#: URL schemes of a Redis Cluster (see :mod:`qw_redis.cluster`), and each node's own scheme.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: Passwords a driver's message may quote (``None`` for none), to hide.
Secrets = Sequence[str | None]


@attrs.frozen(kw_only=True)
class RedisOptions:
    """How a :class:`~qw_redis.broker.RedisBroker` stores jobs and talks to Redis.

    :param max_job_size: the largest job hash, in bytes (``0``: no limit); bigger jobs are
        refused when queued and failed as invalid when found on a queue.
    :param block_slice: the longest single blocking wait for a wake-up, in seconds: a job
        pushed by hand (which sends no wake-up) waits at most this long.
    :param retries: how often a command is retried after a connection error.
    :param backoff_cap: the longest pause between two retries, in seconds.
    :param socket_timeout: seconds to wait for a reply; kept above ``block_slice``.
    :param connect_timeout: seconds to wait for a connection.
    :param wait_replicas: queueing returns only once this many replicas have the jobs
        (Redis's ``WAIT``); ``0``, the default: once the primary has them. See
        :class:`~qw_core.errors.JobsNotReplicated` for what happens when they do not in time.
    :param wait_timeout: how long queueing waits for those replicas, in seconds.
    """

    max_job_size: int = attrs.field(default=DEFAULT_MAX_JOB_SIZE, validator=attrs.validators.ge(0))
    block_slice: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    retries: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    backoff_cap: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    socket_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    connect_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    wait_replicas: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    wait_timeout: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))

    def __attrs_post_init__(self) -> None:
        if self.wait_replicas and self.socket_timeout <= self.wait_timeout:
            raise ConfigurationError(
                f"socket_timeout ({self.socket_timeout}s) must exceed wait_timeout ({self.wait_timeout}s)"
            )
        if self.socket_timeout <= self.block_slice:
            raise ConfigurationError(
                f"socket_timeout ({self.socket_timeout}s) must exceed block_slice ({self.block_slice}s)"
            )


def redact_url(url: str) -> str:
    """``url`` with every credential hidden: the password of its user part, secret query
    parameters (``password``, ``ssl_password``), a fragment (see :mod:`qw_core.urls`)."""
    return urls.redact_url(url)


def _scrub(text: str, secrets: Iterable[str | None]) -> str:
    return urls.scrub(text, secrets)


def is_cluster_url(url: str | None) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url is not None and url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def check_url(url: str) -> str:
    """Return ``url`` if it names a Redis qw can open.

    :raises ConfigurationError: with the reason, and the URL without its password.
    """
    shown = redact_url(url)
    if sentinel.is_sentinel_url(url):
        sentinel.parse(url)
        return url
    try:
        parts = urlsplit(url)
        if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
            raise ValueError("'/', '?' and '#' in a user name or password must be %-encoded")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        if parts.hostname:
            _check_host(parts.hostname)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {shown}: {_scrub(str(exc), url_secrets(url))}") from exc
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError(
            f"invalid Redis URL {shown}: the scheme must be redis://, rediss://, unix://, "
            f"redis+sentinel:// for a primary that Sentinel manages ({sentinel.EXAMPLE}), "
            "or redis+cluster:// for a Redis Cluster (redis+cluster://host1:7000,host2:7001/?shards=3)"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"invalid Redis URL {shown}: a unix:// URL needs a socket path")
    elif not re.fullmatch(r"/?|/\d+", parts.path):
        raise ConfigurationError(f"invalid Redis URL {shown}: the path must be a database number, like /0")
    return url


def _check_host(host: str) -> None:
    """Refuse a host name no resolver takes (a label over 63 characters, an empty one as in
    ``a..b``), which the connection would report as an encoding error.

    :raises ValueError: saying why.
    """
    try:
        host.encode("idna")
    except UnicodeError as exc:
        # Python 3.13 prefixes the reason with the codec's words; the reason is the last part.
        why = str(exc.__cause__ or exc).rsplit(": ", 1)[-1]
        raise ValueError(f"{host!r} is not a host name ({why})") from None


def url_secrets(url: str) -> list[str]:
    """The credentials written in ``url``, to take out of a driver's messages about it."""
    return urls.url_secrets(url)


#: How replies are decoded: undecodable bytes become lone surrogates (see the module doc).
ERRORS = "surrogateescape"


class _SurrogatePacker:
    """redis-py's hiredis command packer, except that a string holding lone surrogates
    (bytes that were not UTF-8 when read) is sent as the bytes it was read from.

    redis-py's pure-Python packer does this by itself (it encodes with the client's
    ``encoding_errors``); hiredis's does not, and refuses such a string.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def pack(self, *args: Any) -> Any:
        try:
            return self._inner.pack(*args)
        except UnicodeEncodeError:
            raw = (arg.encode("utf-8", ERRORS) if isinstance(arg, str) else arg for arg in args)
            return self._inner.pack(*raw)


def _text_settings() -> dict[str, Any]:
    """The client settings that make replies text that round-trips any bytes."""
    settings: dict[str, Any] = {"decode_responses": True, "encoding": "utf-8", "encoding_errors": ERRORS}
    serializer = getattr(redis.connection, "HiredisRespSerializer", None)
    if serializer is not None and getattr(redis.connection, "HIREDIS_AVAILABLE", False):
        settings["command_packer"] = _SurrogatePacker(serializer())
    return settings


def is_qw_client(client: redis.Redis) -> bool:
    """Whether ``client`` decodes replies the way qw needs (see :func:`qw_client`)."""
    kwargs = client.connection_pool.connection_kwargs
    return bool(kwargs.get("decode_responses")) and kwargs.get("encoding_errors") == ERRORS


def qw_client(client: redis.Redis) -> redis.Redis:
    """A client on the same server, with the same settings as ``client``, that decodes
    replies to text which round-trips any bytes (``client`` itself if it does already).

    Any redis-py or fakeredis client will do, decoding or not; the new one has a pool of
    its own (``client`` is left as it is, for its owner to use and close).
    """
    if is_qw_client(client):
        return client
    return redis.Redis(connection_pool=_same_server(client.connection_pool, **_text_settings()))


def _same_server(pool: redis.ConnectionPool, **settings: Any) -> redis.ConnectionPool:
    """A new pool on the server ``pool`` connects to (through the same Sentinels, for a
    Sentinel-managed one), with ``settings`` changed."""
    if sentinel.is_sentinel_pool(pool):
        return sentinel.same_pool(pool, **settings)
    return redis.ConnectionPool(
        connection_class=pool.connection_class, **{**pool.connection_kwargs, **settings}
    )


#: Query parameters of a Redis URL that are qw's settings, not redis-py's: each with the
#: type of its value and what that value is, for messages.
QW_PARAMETERS: Mapping[str, tuple[type, str]] = {
    "max_job_size": (int, "a number of bytes"),
    "wait_replicas": (int, "a number of replicas"),
    "wait_timeout": (float, "a number of seconds above 0"),
}


def qw_settings(url: str, options: RedisOptions) -> tuple[str, RedisOptions]:
    """``url`` without qw's own query parameters (:data:`QW_PARAMETERS`), and ``options``
    with them applied: ``redis://host/0?max_job_size=1048576``,
    ``redis+sentinel://h1,h2/mymaster/0?wait_replicas=1&wait_timeout=0.5``.

    :raises ConfigurationError: a value that is not a number of the right kind.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # check_url says what is wrong with it
        return url, options
    if not any(name in parts.query for name in QW_PARAMETERS):
        return url, options
    kept, settings = [], {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in QW_PARAMETERS:
            kept.append((name, value))
            continue
        kind, what = QW_PARAMETERS[name]
        if not re.fullmatch(r"\d+" if kind is int else r"\d+(\.\d*)?|\.\d+", value):
            raise ConfigurationError(f"invalid Redis URL {redact_url(url)}: {name} must be {what}")
        settings[name] = kind(value)
    try:
        options = attrs.evolve(options, **settings)
    except (ValueError, ConfigurationError) as exc:
        raise ConfigurationError(f"invalid Redis URL {redact_url(url)}: {exc}") from exc
    query = urlencode(kept)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url.split("?", 1)[0]
    return base + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else ""), options


def open_client(url: str, options: RedisOptions, **extra: Any) -> redis.Redis:
    """A client for ``url`` that decodes replies (see :func:`qw_client`) and retries
    transient errors.

    Does not connect yet (see :func:`ping`).

    :param extra: further ``redis.Redis`` keyword arguments (TLS files, ...).
    :raises ConfigurationError: the URL or an option in its query string is invalid.
    """
    check_url(url)
    kwargs: dict[str, Any] = {
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.connect_timeout,
        "retry": Retry(ExponentialBackoff(cap=options.backoff_cap, base=0.05), options.retries),
        **extra,
        **_text_settings(),
    }
    if sentinel.is_sentinel_url(url):
        return sentinel.open_client(url, kwargs)
    try:
        return redis.Redis.from_url(url, **kwargs)
    except (ValueError, TypeError) as exc:
        message = _scrub(str(exc), url_secrets(url))
        raise ConfigurationError(f"invalid Redis URL {redact_url(url)}: {message}") from exc


def unavailable(exc: redis.RedisError, shown_url: str, secrets: Secrets = ()) -> BrokerUnavailable:
    """A one-line :class:`BrokerUnavailable` for a connection-level ``exc`` (``secrets``, the
    passwords it may quote, hidden)."""
    text = _scrub(str(exc), secrets).strip()
    match = re.match(r"Error -?\d+ connecting to \S+?\.? (.*)", text)
    reason = (match.group(1) if match else text).rstrip(".") or type(exc).__name__
    if isinstance(exc, redis.sentinel.MasterNotFoundError):
        return BrokerUnavailable(
            f"the Sentinels of {shown_url} name no primary now (a failover under way, or none reachable)"
        )
    if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
        return BrokerUnavailable(f"Redis at {shown_url} refused the login: {reason}")
    if isinstance(exc, redis.TimeoutError) and shown_url.startswith("rediss:"):
        reason += " (a rediss:// URL needs a port that speaks TLS; is it a plain one?)"
    return BrokerUnavailable(f"cannot reach Redis at {shown_url}: {reason}")


#: Error replies of a server that is no master any more (a failover under way): the
#: connection is dropped and the call fails as if the connection had been lost.
_FAILOVER_REPLIES = ("READONLY", "UNBLOCKED", "MASTERDOWN")
#: Error replies of a server that refuses work for a while: out of memory under
#: ``noeviction`` (until something is deleted), busy running a script (until it ends or
#: is killed), loading its data set. Callers wait them out as they do a lost connection.
_PASSING_REPLIES = {
    "OOM": "is out of memory (maxmemory reached)",
    "BUSY": "is busy running a script",
    "LOADING": "is loading its data set",
    "TRYAGAIN": "asks to try again",
    "NOREPLICAS": "has too few replicas in sync to take writes (min-replicas-to-write)",
}


def is_failover(exc: redis.RedisError) -> bool:
    """Whether ``exc`` says the server stopped being a master (``READONLY``, ``UNBLOCKED``).

    Callers treat it as a lost connection: reconnect (to the new master, where a proxy,
    DNS or Sentinel points) and try again after a back-off.
    """
    if isinstance(exc, (redis.ReadOnlyError, redis.exceptions.MasterDownError)):
        return True
    return isinstance(exc, redis.ResponseError) and _reply(exc).startswith(_FAILOVER_REPLIES)


def _reply(exc: redis.RedisError) -> str:
    """The error reply ``exc`` carries, without what redis-py put before it (a pipeline's
    ``Command # 1 (EVALSHA ...) of pipeline caused error: ``)."""
    text = str(exc)
    _, caused, reply = text.partition(" of pipeline caused error: ")
    return (reply if caused and text.startswith("Command # ") else text).lstrip("-")


def passing_trouble(exc: redis.RedisError) -> str | None:
    """What ``exc`` says if it is a reply of a server that refuses work only for a while
    (``OOM``, ``BUSY``, ``LOADING``, ``TRYAGAIN``, ``NOREPLICAS``), else ``None``.

    redis-py raises some of these as classes of their own, with the code taken off the
    message (``OutOfMemoryError``), and others as a plain ``ResponseError`` (``BUSY``).
    """
    if not isinstance(exc, redis.ResponseError):
        return None
    code = getattr(exc, "status_code", None) or _reply(exc).split(" ", 1)[0]
    for word, name in (("OOM", "OutOfMemoryError"), ("TRYAGAIN", "TryAgainError")):
        if isinstance(exc, getattr(redis.exceptions, name, ())):
            code = word
    return _PASSING_REPLIES.get(code)


def translate(exc: redis.RedisError, shown_url: str, secrets: Secrets = ()) -> QwError:
    """The qw error for ``exc``, raised while talking to the Redis at ``shown_url``.

    A lost connection, a failover, and a server that refuses work for a while (out of
    memory, busy with a script, loading) are :class:`BrokerUnavailable`, which callers
    wait out; any other error reply is a :class:`BackendError`.
    """
    text = _scrub(str(exc), secrets)
    if is_failover(exc):
        return BrokerUnavailable(f"Redis at {shown_url} is not a master now (failover?): {text}")
    passing = passing_trouble(exc)
    if passing is not None:
        return BrokerUnavailable(f"Redis at {shown_url} {passing}: {text}")
    lost = isinstance(exc, (redis.ConnectionError, redis.TimeoutError))
    if lost or text.startswith(("NOAUTH", "WRONGPASS")):
        return unavailable(exc, shown_url, secrets)
    if "unknown command" in text.lower():
        return BackendError(f"Redis at {shown_url} is too old for qw (needs 6.2 or newer): {text}")
    return BackendError(f"Redis at {shown_url} answered with an error: {text}")


def ping(client: redis.Redis, shown_url: str, secrets: Secrets = ()) -> None:
    """Check that Redis answers, and takes the login and database the URL names.

    The check is tried once, without the client's retries, which are put back after it: a
    start-up is told at once that Redis cannot be reached. (With them, a port that never
    answers, such as a plain one asked for TLS, cost four connect timeouts: 20 s.) The
    connection it opened stays in the client's pool for the calls that follow.

    :raises ConfigurationError: Redis answers, but wants a password, refuses the login,
        or has no such database, or its TLS certificate does not verify: the URL (or the
        CA) is wrong, not the server down.
    :raises BrokerUnavailable: in one line, without the password.
    """
    retry = client.get_retry()
    client.set_retry(Retry(NoBackoff(), 0))
    try:
        client.ping()
    except redis.sentinel.MasterNotFoundError as exc:
        raise sentinel.diagnose(client, shown_url, secrets) from exc
    except redis.RedisError as exc:
        wrong = _wrong_url(exc, client, shown_url, secrets)
        if wrong is not None:
            raise wrong from exc
        raise unavailable(exc, shown_url, secrets) from exc
    finally:
        if retry is not None:
            client.set_retry(retry)


#: What to do about a TLS certificate that does not verify.
CA_HINT = (
    "give the CA that signed it with ?ssl_ca_certs=PATH in the URL (or the SSL_CERT_FILE variable), "
    "and name the server as its certificate does"
)


def _wrong_url(
    exc: redis.RedisError, client: redis.Redis, shown_url: str, secrets: Secrets = ()
) -> ConfigurationError | None:
    """What is wrong with the URL, if ``exc`` (at connection time) says it is the URL."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        reason = text.partition("certificate verify failed:")[2].strip().rstrip(".") or text
        reason = re.sub(r"\.? \(_ssl\.c:\d+\)$", "", reason)
        return ConfigurationError(
            f"Redis at {shown_url} has a TLS certificate that does not verify "
            f"({_scrub(reason, secrets)}): {CA_HINT}"
        )
    # NOAUTH: redis-py 7+ says it as the reply to HELLO, 6.x as "Authentication required."
    if any(words in text for words in ("must be called with the client already authenticated", "NOAUTH")) or (
        isinstance(exc, redis.AuthenticationError) and text.startswith("Authentication required")
    ):
        form = (
            "redis+sentinel://:PASSWORD@host1,host2/service/db"
            if "+sentinel" in shown_url
            else ("redis://:PASSWORD@host:port/db")
        )
        return ConfigurationError(
            f"Redis at {shown_url} wants a password: put it in the URL ({form}, "
            "or user:PASSWORD@ with an ACL user), preferably through QW_URL"
        )
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in text:
        return ConfigurationError(
            f"Redis at {shown_url} refused the login: check the user and password in the URL"
        )
    if "DB index is out of range" in text:
        db = client.connection_pool.connection_kwargs.get("db", 0)
        count = _database_count(client)
        has = f"it has {count}: 0 to {count - 1}" if count else "see its 'databases' setting"
        return ConfigurationError(f"Redis at {shown_url} has no database {db} ({has})")
    return None


def _database_count(client: redis.Redis) -> int | None:
    """How many databases the server of ``client`` has, if it says (``CONFIG GET``)."""
    probe = redis.Redis(connection_pool=_same_server(client.connection_pool, db=0))
    try:
        count = probe.config_get("databases").get("databases")
        return int(count) if count is not None else None
    except (redis.RedisError, ValueError):
        return None
    finally:
        probe.close()


# -- describing an existing client ----------------------------------------------------------

#: Connection settings copied from an existing client into a factory (picklable values only).
_COPIED = (
    "socket_timeout",
    "socket_connect_timeout",
    "client_name",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_ca_data",
    "ssl_check_hostname",
    "ssl_password",
)


def client_secrets(client: redis.Redis) -> list[str | None]:
    """The passwords ``client`` was opened with (its login's, its TLS key's), to hide."""
    pool = client.connection_pool
    kw = pool.connection_kwargs
    found: list[str | None] = [kw.get("password"), kw.get("ssl_password")]
    return [*found, *sentinel.pool_secrets(pool)] if sentinel.is_sentinel_pool(pool) else found


def client_url(client: redis.Redis, *, with_password: bool = False) -> str:
    """The URL of the server ``client`` talks to (password masked unless asked for)."""
    pool = client.connection_pool
    kw: Mapping[str, Any] = pool.connection_kwargs
    user, password = kw.get("username"), kw.get("password")
    auth = ""
    if user or password:
        shown = quote(str(password), safe="") if with_password else urls.MASK
        auth = quote(str(user or ""), safe="") + (f":{shown}" if password else "") + "@"
    db = int(kw.get("db") or 0)
    if sentinel.is_sentinel_pool(pool):
        url = sentinel.pool_url(pool, auth, db)
        return url if with_password else urls.redact_url(url)
    if issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        return f"unix://{auth}{kw.get('path', '')}?db={db}"
    scheme = "rediss" if issubclass(pool.connection_class, redis.SSLConnection) else "redis"
    host = kw.get("host", "localhost")
    host = f"[{host}]" if ":" in str(host) else host
    return f"{scheme}://{auth}{host}:{kw.get('port', 6379)}/{db}"


def client_extras(client: redis.Redis) -> tuple[tuple[str, Any], ...]:
    """The settings of ``client`` a factory must pass on besides its URL."""
    kw = client.connection_pool.connection_kwargs
    return tuple(
        (name, kw[name])
        for name in _COPIED
        if name in kw and isinstance(kw[name], (str, int, float, bool, type(None)))
    )
