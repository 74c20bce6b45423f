"""Who may use the dashboard, and which requests may change anything.

* **Authentication** (:class:`Auth`): a token (``QW_DASHBOARD_TOKEN``), sent as
  ``Authorization: Bearer`` or, after the login form, as a session cookie derived from it;
  and/or HTTP basic auth (``QW_DASHBOARD_USER`` and ``QW_DASHBOARD_PASSWORD``). Every
  comparison is in constant time. Without either, the dashboard is open: :func:`check_host`
  lets it listen only on a loopback address then.
* **CSRF**: every action is a POST that carries the token of the browser's ``qw_csrf``
  cookie (``SameSite=Strict``, set on the first page) in a hidden form field, and whose
  ``Origin`` (else ``Referer``) is the dashboard's own; :func:`check_post` refuses any other.

The secrets come from the environment, never from the command line (a command line is
visible to every user of the host).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from qw_core.errors import ConfigurationError

#: The environment variables :meth:`Auth.from_env` reads.
TOKEN_ENV = "QW_DASHBOARD_TOKEN"
USER_ENV = "QW_DASHBOARD_USER"
PASSWORD_ENV = "QW_DASHBOARD_PASSWORD"
#: The cookie that holds a browser's CSRF token, and the form field that repeats it.
CSRF_COOKIE = "qw_csrf"
CSRF_FIELD = "csrf"
#: The cookie a token login sets.
SESSION_COOKIE = "qw_dashboard_session"


@attrs.frozen(kw_only=True)
class Auth:
    """What a request must present: a token, a user and password, either, or nothing.

    :param token: the token (``Authorization: Bearer TOKEN``, or the login form).
    :param user: the basic-auth user (with ``password``).
    :param password: the basic-auth password.
    """

    token: str | None = attrs.field(default=None, repr=False)
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if (self.user is None) != (self.password is None):
            raise ConfigurationError(f"basic auth needs both {USER_ENV} and {PASSWORD_ENV}")
        for value in (self.token, self.user, self.password):
            if value is not None and not value:
                raise ConfigurationError("a dashboard token, user or password must not be empty")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Auth:
        """The credentials in :data:`TOKEN_ENV`, :data:`USER_ENV` and :data:`PASSWORD_ENV`
        (an empty variable counts as unset).

        :raises ConfigurationError: only one of the user and the password is set.
        """
        return cls(
            token=environ.get(TOKEN_ENV) or None,
            user=environ.get(USER_ENV) or None,
            password=environ.get(PASSWORD_ENV) or None,
        )

    @property
    def required(self) -> bool:
        """Whether any credential is configured."""
        return self.token is not None or self.user is not None

    @property
    def basic(self) -> bool:
        return self.user is not None

    def session_value(self) -> str:
        """The login cookie's value: derived from the token, so it changes with it, and
        useless anywhere else."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"qw-dashboard-session", hashlib.sha256).hexdigest()

    def allows(self, authorization: str | None, session: str | None) -> bool:
        """Whether a request with this ``Authorization`` header and session cookie may in."""
        if not self.required:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        scheme = scheme.lower()
        if self.token is not None:
            if scheme == "bearer" and _same(value.strip(), self.token):
                return True
            if session is not None and _same(session, self.session_value()):
                return True
        if self.user is not None and self.password is not None and scheme == "basic":
            try:
                user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            # Both compared, always: no early exit tells a right user from a wrong one.
            right_user = _same(user, self.user)
            right_password = _same(password, self.password)
            return bool(sep) and right_user and right_password
        return False

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` (typed into the login form) is the token."""
        return self.token is not None and _same(given, self.token)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, auth: Auth) -> None:
    """Refuse to listen on ``host`` beyond this machine without credentials.

    :raises ConfigurationError: ``host`` is not a loopback address and ``auth`` requires nothing.
    """
    if not is_loopback(host) and not auth.required:
        raise ConfigurationError(
            f"the dashboard would listen on {host} without authentication: set {TOKEN_ENV} "
            f"(or {USER_ENV} and {PASSWORD_ENV}), or listen on 127.0.0.1"
        )


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def check_post(
    *, cookie: str | None, field: str | None, origin: str | None, referer: str | None, host: str | None
) -> str | None:
    """Why a POST must be refused, or ``None`` if it may go on.

    :param cookie: the request's :data:`CSRF_COOKIE`.
    :param field: its form's :data:`CSRF_FIELD`.
    :param origin: its ``Origin`` header; ``referer``, its ``Referer`` (read when there is
        no ``Origin``); ``host``, its ``Host`` header, which either must name.
    """
    source = origin if origin not in (None, "null") else referer
    if origin == "null":
        return "a request from an opaque origin"
    if source is not None and host is not None and urlsplit(source).netloc.lower() != host.lower():
        return "a request from another site"
    if not cookie or not field or not hmac.compare_digest(cookie.encode(), field.encode()):
        return "the form's CSRF token is missing or stale (reload the page and try again)"
    return None
