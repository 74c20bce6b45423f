"""Where a URL holds credentials, so that no message, log line or command line shows them.

A backend's URL is how a qw process names its server, and URLs carry secrets in three
places: the password of the user part (``redis://user:PASSWORD@host``), query
parameters (``?password=...``, ``?ssl_password=...`` for a key's passphrase), and, when a
password holds an unencoded ``/``, ``?`` or ``#``, whatever a URL parser takes for the
path, query or fragment. :func:`secret_spans` finds them all by position, without
trusting the URL to be well formed, and errs on the side of hiding too much:

- the user part ends at the last ``@`` (a password may hold ``@``, a host never does);
  where no ``@`` comes before the first ``/``, ``?`` or ``#`` but one comes later, those
  characters were in the password, and everything up to that ``@`` is the user part;
- a query parameter whose name says pass, secret or token is a secret;
- a fragment is one (a server URL has no use for it, and a password's tail ends up there).

:func:`redact_url` replaces each secret with ``***`` for messages; :func:`mask_url`
replaces it character for character (the same length, for overwriting a command line in
place: see :mod:`qw_cli.cmdline`). Both know nothing of any backend, so every backend's
URLs are treated alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import unquote

#: What a secret is shown as.
MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_PARAMETER = re.compile(r"[?&]([^=&#?]*)=([^&#]*)")
_SECRET_NAME = re.compile(r"pass|secret|token", re.IGNORECASE)


def secret_spans(url: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` positions of every credential in ``url``: in order, apart, none empty."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    spans: list[tuple[int, int]] = []
    at = url.rfind("@", start, _first(url, "/?#", start))
    if at < 0:
        at = url.rfind("@", start)  # a '/', '?' or '#' in the password (or no user part)
    if at >= 0:
        colon = url.find(":", start, at)
        if colon >= 0:
            spans.append((colon + 1, at))
    for parameter in _PARAMETER.finditer(url, start):
        if _SECRET_NAME.search(unquote(parameter.group(1))):
            spans.append(parameter.span(2))
    fragment = url.find("#", max(at, start))
    if fragment >= 0:
        spans.append((fragment + 1, len(url)))
    return _merged(spans)


def redact_url(url: str) -> str:
    """``url`` with every credential replaced by ``***``."""
    return _replace(url, lambda text: MASK)


def mask_url(url: str, char: str = "*") -> str:
    """``url`` with every character of every credential replaced by ``char`` (same length)."""
    return _replace(url, lambda text: char * len(text))


def url_secrets(url: str) -> list[str]:
    """The credentials in ``url``, as written and %-decoded: the text to take out of a
    message that a driver wrote about this URL."""
    return sorted({piece for a, b in secret_spans(url) for piece in (url[a:b], unquote(url[a:b]))})


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with each of ``secrets`` (``None`` and empty ones skipped) replaced by ``***``,
    the longest first (one secret may hold another)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _replace(url: str, hide: Callable[[str], str]) -> str:
    parts, last = [], 0
    for a, b in secret_spans(url):
        parts += [url[last:a], hide(url[a:b])]
        last = b
    return "".join([*parts, url[last:]])


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` in order, overlapping ones joined, empty ones dropped."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(span for span in spans if span[1] > span[0]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _first(text: str, chars: str, start: int) -> int:
    """Where the first of ``chars`` is in ``text`` from ``start``; ``len(text)`` if none is."""
    found = [i for i in (text.find(c, start) for c in chars) if i >= 0]
    return min(found, default=len(text))
