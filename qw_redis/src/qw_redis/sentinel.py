"""A primary that Redis Sentinel manages: its URLs, and clients that follow it over a failover.

redis-py follows a Sentinel-managed primary by itself (:class:`redis.sentinel.Sentinel`:
every new connection asks the Sentinels where the primary is, and a connection that
meets a demoted primary's ``READONLY`` reply is dropped), but it has no URL for one. qw
names its Redis by a URL everywhere (``qw run --url``, ``QW_URL``, every ``qw`` verb,
:meth:`RedisBroker.from_url <qw_redis.broker.RedisBroker.from_url>`, the factories that
reopen a broker in each worker process), so this module adds one form, the one other
Python projects settled on (prefect-redis and docket read the same grammar)::

    redis+sentinel://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB][?OPTIONS]
    rediss+sentinel://...    TLS to the Sentinels and to the primary alike

- ``HOST:PORT`` are the Sentinels (port 26379 unless given; ``[::1]:26379`` for IPv6);
  ``SERVICE`` is the name they monitor the primary under (``sentinel monitor SERVICE ...``);
  ``DB`` the database (0 unless given).
- ``USER:PASSWORD@`` is the login of the primary (and its replicas), as in a ``redis://``
  URL. The Sentinels have a login of their own, if any (``requirepass`` in
  ``sentinel.conf``): ``?sentinel_password=...`` (and ``&sentinel_username=...`` for an ACL
  user). Both are hidden wherever a URL is shown (:mod:`qw_core.urls` hides every query
  parameter whose name says *pass*).
- Every other option is redis-py's, as in a ``redis://`` URL, for the connections to the
  primary; on ``rediss+sentinel://`` the ``ssl_*`` ones (``ssl_ca_certs=...``) serve the
  Sentinel connections too, so one CA covers the whole set.

Why not one URL per Sentinel, or a separate setting: a URL is the only thing every qw
entry point already carries (and hides the secrets of), so one string has to say it all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard, cast
from urllib.parse import parse_qsl, unquote, urlencode

import attrs
import redis
import redis.connection
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from qw_core import urls
from qw_core.errors import BrokerUnavailable, ConfigurationError, QwError

#: The URL schemes of a Sentinel-managed primary: plain, and TLS.
SCHEMES = ("redis+sentinel", "rediss+sentinel")
#: The port a Sentinel listens on unless the URL says otherwise.
DEFAULT_PORT = 26379
#: Query parameters that are the Sentinels' own login, not the primary's.
SENTINEL_PARAMETERS = ("sentinel_username", "sentinel_password")
#: The longest wait for a Sentinel's connection or answer, in seconds: one that does not
#: answer costs a question (which then goes to the next) no more than this.
SENTINEL_TIMEOUT = 1.0
#: What a Sentinel URL looks like, for messages.
EXAMPLE = "redis+sentinel://host1:26379,host2:26379/mymaster/0"

_HOST = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>[^:]*))?")


@attrs.frozen(kw_only=True)
class SentinelTarget:
    """What a Sentinel URL names.

    :param sentinels: the Sentinels' (host, port) pairs, in the URL's order.
    :param service: the name the Sentinels monitor the primary under.
    :param tls: whether every connection speaks TLS (``rediss+sentinel://``).
    :param sentinel_login: ``sentinel_username``/``sentinel_password``, as given.
    :param data_url: a ``redis://`` (or ``rediss://``) URL with everything else the URL
        says about the primary (login, database, redis-py options), for redis-py to read;
        its host is a stand-in.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    tls: bool
    sentinel_login: tuple[tuple[str, str], ...]
    data_url: str


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names a Sentinel-managed primary (its scheme alone says)."""
    return url.split("://", 1)[0].lower() in SCHEMES and "://" in url


def parse(url: str) -> SentinelTarget:
    """What the Sentinel URL ``url`` names.

    :raises ConfigurationError: in one line that says what to write instead, the
        passwords hidden.
    """
    shown = urls.redact_url(url)

    def bad(why: str) -> ConfigurationError:
        return ConfigurationError(f"invalid Redis URL {shown}: {why}")

    scheme, _, rest = url.partition("://")
    if "#" in rest:
        raise bad("a '#' in a user name or password must be %-encoded (%23)")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "@" in tail:
        raise bad("'/', '?' and '#' in a user name or password must be %-encoded")
    userinfo, at, hosts = netloc.rpartition("@")
    path, _, query = tail.partition("?")
    sentinels = tuple(_sentinel(item, bad) for item in hosts.split(",")) if hosts else ()
    if not sentinels:
        raise bad(f"name the Sentinels before the service, like {EXAMPLE}")
    segments = path.split("/")[1:] if path else []
    if not segments or not segments[0]:
        raise bad(f"put the service name the Sentinels monitor after the hosts, like {EXAMPLE}")
    if len(segments) > 2 or (len(segments) == 2 and not re.fullmatch(r"\d*", segments[1])):
        raise bad(f"the path is the service name, then a database number: like {EXAMPLE}")
    db = segments[1] if len(segments) == 2 and segments[1] else "0"
    pairs = parse_qsl(query, keep_blank_values=True)
    login = tuple((name, value) for name, value in pairs if name in SENTINEL_PARAMETERS)
    others = urlencode([(name, value) for name, value in pairs if name not in SENTINEL_PARAMETERS])
    tls = scheme.lower() == "rediss+sentinel"
    data_url = f"{'rediss' if tls else 'redis'}://{userinfo}{at}localhost/{db}" + (
        f"?{others}" if others else ""
    )
    return SentinelTarget(
        sentinels=sentinels, service=unquote(segments[0]), tls=tls, sentinel_login=login, data_url=data_url
    )


def _at_most(value: float | None, most: float) -> float:
    return most if value is None else min(value, most)


def _sentinel(item: str, bad: Any) -> tuple[str, int]:
    match = _HOST.fullmatch(item.strip())
    if match is None:
        raise bad(f"{item!r} is not a Sentinel's host[:port] (an IPv6 address goes in brackets: [::1]:26379)")
    host = match.group("v6") or match.group("name")
    port = match.group("port")
    if port is None or port == "":
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise bad(f"the port of Sentinel {host!r} must be a number from 1 to 65535, not {port!r}")
    return host, int(port)


def open_client(url: str, settings: Mapping[str, Any]) -> redis.Redis:
    """A client of the primary the Sentinel URL ``url`` names; it does not connect yet.

    :param settings: ``redis.Redis`` keyword arguments for the connections to the primary
        (timeouts, retries, decoding, TLS files a factory copied); the URL's own options
        win, as in :meth:`redis.Redis.from_url`. The Sentinel connections take the
        timeouts (at most :data:`SENTINEL_TIMEOUT`), the TLS settings on
        ``rediss+sentinel://``, and no retries: redis-py asks the next Sentinel instead.
    :raises ConfigurationError: the URL or one of its options is invalid.
    """
    target = parse(url)
    try:
        options = redis.connection.parse_url(target.data_url)  # type: ignore[no-untyped-call]  # untyped upstream
    except ValueError as exc:
        message = urls.scrub(str(exc), urls.url_secrets(url))
        raise ConfigurationError(f"invalid Redis URL {urls.redact_url(url)}: {message}") from exc
    for stand_in in ("host", "port", "connection_class"):
        options.pop(stand_in, None)
    data: dict[str, Any] = {**settings, **options}
    if target.tls:
        data["ssl"] = True
    watchers: dict[str, Any] = {
        "socket_timeout": _at_most(data.get("socket_timeout"), SENTINEL_TIMEOUT),
        "socket_connect_timeout": _at_most(data.get("socket_connect_timeout"), SENTINEL_TIMEOUT),
        "retry": Retry(NoBackoff(), 0),
        **{name.removeprefix("sentinel_"): value for name, value in target.sentinel_login},
    }
    if target.tls:
        watchers.update({name: value for name, value in data.items() if name.startswith("ssl")})
    manager = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]  # untyped upstream
        list(target.sentinels), sentinel_kwargs=watchers, **data
    )
    return cast("redis.Redis", manager.master_for(target.service))  # type: ignore[no-untyped-call]


# -- clients made from a Sentinel --------------------------------------------------------------


def is_sentinel_pool(pool: Any) -> TypeGuard[redis.sentinel.SentinelConnectionPool]:
    """Whether ``pool`` is a pool of a Sentinel-managed server."""
    return isinstance(pool, redis.sentinel.SentinelConnectionPool)


def same_pool(pool: redis.sentinel.SentinelConnectionPool, **settings: Any) -> redis.ConnectionPool:
    """A new pool following the same service through the same Sentinels as ``pool``, with
    ``settings`` changed."""
    kwargs = {name: value for name, value in pool.connection_kwargs.items() if name != "connection_pool"}
    kwargs.update(settings)
    return redis.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]  # untyped upstream
        pool.service_name,
        pool.sentinel_manager,
        connection_class=pool.connection_class,
        is_master=pool.is_master,
        check_connection=pool.check_connection,
        **kwargs,
    )


def _watchers(pool: redis.sentinel.SentinelConnectionPool) -> list[Mapping[str, Any]]:
    return [watcher.connection_pool.connection_kwargs for watcher in pool.sentinel_manager.sentinels]


def pool_secrets(pool: redis.sentinel.SentinelConnectionPool) -> list[str | None]:
    """The Sentinels' passwords (their login's, their TLS key's), to hide."""
    return [kw.get(name) for kw in _watchers(pool) for name in ("password", "ssl_password")]


def pool_url(pool: redis.sentinel.SentinelConnectionPool, auth: str, db: int) -> str:
    """The Sentinel URL of ``pool`` (``auth``, the primary's login part, as the caller
    shows it; the Sentinels' password masked unless ``auth`` holds the real one)."""
    watchers = _watchers(pool)
    hosts = ",".join(
        f"[{kw.get('host')}]:{kw.get('port')}"
        if ":" in str(kw.get("host"))
        else f"{kw.get('host')}:{kw.get('port')}"
        for kw in watchers
    )
    scheme = "rediss+sentinel" if issubclass(pool.connection_class, redis.SSLConnection) else "redis+sentinel"
    first = watchers[0] if watchers else {}
    login = [(f"sentinel_{name}", first[name]) for name in ("username", "password") if first.get(name)]
    query = f"?{urlencode(login)}" if login else ""
    return f"{scheme}://{auth}{hosts}/{pool.service_name}/{db}{query}"


#: What :func:`look` says when a failover is under way.
FAILING_OVER = "failing over"


def look(pool: redis.sentinel.SentinelConnectionPool) -> str | tuple[Any, Any] | None:
    """Ask the first Sentinel that answers about the primary of ``pool`` (one
    ``SENTINEL MASTER`` question) and say what a client of it must know.

    redis-py asks the Sentinels where the primary is only when it opens a connection, so
    connections to a primary that was demoted but lives on (``SENTINEL FAILOVER``, or a
    partition that cut it off from the Sentinels) keep being used, their writes lost when
    it becomes a replica, about ten seconds later with Redis 7. And from the moment the
    Sentinels pick a replica to promote until they announce it (a second or more), they
    still name the old primary.

    :return: :data:`FAILING_OVER` while they fail it over (``failover_in_progress``);
        ``(old, new)`` addresses if the primary is no longer where the pool's connections
        go (they are all dropped then, and redis-py knows the new one); else ``None``. A
        Sentinel that does not answer says nothing: the primary may well be fine.
    """
    for watcher in pool.sentinel_manager.sentinels:
        try:
            state = watcher.sentinel_master(pool.service_name)
        except redis.RedisError:
            continue
        flags = state.get("flags", "")  # text with RESP2, a set with RESP3
        if "failover_in_progress" in (
            flags if isinstance(flags, (set, frozenset)) else str(flags).split(",")
        ):
            return FAILING_OVER
        before = pool.master_address
        if (
            before is None
            or not state.get("is_master")
            or (state.get("ip"), state.get("port")) == tuple(before)
        ):
            return None
        try:
            after = pool.get_master_address()  # type: ignore[no-untyped-call]  # untyped upstream
        except redis.RedisError:
            return None
        pool.disconnect()  # redis-py dropped the idle connections; these are the rest
        return before, after
    return None


# -- what went wrong ---------------------------------------------------------------------------


def diagnose(client: redis.Redis, shown_url: str, secrets: Iterable[str | None]) -> QwError:
    """Why no primary could be found through the Sentinels of ``client``: asks each one
    (once, without retries) and says what to do, in one line.

    :return: a :class:`ConfigurationError` when the URL is wrong (a service the Sentinels
        do not know, a Sentinel login refused); else :class:`BrokerUnavailable`.
    """
    pool = cast("redis.sentinel.SentinelConnectionPool", client.connection_pool)
    service = pool.service_name
    unreachable: list[str] = []
    for watcher in pool.sentinel_manager.sentinels:
        kw = watcher.connection_pool.connection_kwargs
        where = f"{kw.get('host')}:{kw.get('port')}"
        try:
            masters = watcher.sentinel_masters()
        except redis.RedisError as exc:
            text = urls.scrub(str(exc), secrets)
            if "CERTIFICATE_VERIFY_FAILED" in text:
                return ConfigurationError(
                    f"the Sentinel at {where} of {shown_url} has a TLS certificate that does not verify: "
                    "give the CA that signed it with ?ssl_ca_certs=PATH in the URL (or the SSL_CERT_FILE "
                    "variable), and name the Sentinels as their certificates do"
                )
            # NOAUTH: redis-py 7+ says it as the reply to HELLO, 6.x as "Authentication required."
            wants = "NOAUTH" in text or "must be called with the client already authenticated" in text
            if wants or (
                isinstance(exc, redis.AuthenticationError) and text.startswith("Authentication required")
            ):
                return ConfigurationError(
                    f"the Sentinel at {where} of {shown_url} wants a password: give the Sentinels' password "
                    "with ?sentinel_password=... (the password before '@' is the primary's)"
                )
            if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in text:
                return ConfigurationError(
                    f"the Sentinel at {where} of {shown_url} refused the login: check ?sentinel_password=... "
                    "(and ?sentinel_username=...; the password before '@' is the primary's)"
                )
            unreachable.append(f"{where}: {_reason(text)}")
            continue
        state = masters.get(service)
        if state is None:
            known = ", ".join(sorted(masters)) or "none"
            return ConfigurationError(
                f"the Sentinel at {where} of {shown_url} monitors no primary named {service!r} "
                f"(it monitors: {known}): put the service name of its 'sentinel monitor' line in the URL"
            )
    if unreachable and len(unreachable) == len(pool.sentinel_manager.sentinels):
        return BrokerUnavailable(f"cannot reach any Sentinel of {shown_url}: {'; '.join(unreachable)}")
    return BrokerUnavailable(
        f"the Sentinels of {shown_url} know no working primary {service!r} now (a failover under way?)"
    )


def _reason(text: str) -> str:
    match = re.match(r"Error -?\d+ connecting to \S+?\.? (.*)", text.strip())
    return (match.group(1) if match else text.strip()).rstrip(".") or "no answer"
