"""The templates: Jinja2 with autoescaping on for every template, so a job whose data
holds ``<script>`` shows it as text; and the small formatting filters they use."""

from __future__ import annotations

import datetime
import time
from typing import Any
from urllib.parse import urlencode

import jinja2

from qw_core import tracebacks
from qw_core.dashboard import chart, reads


def environment() -> jinja2.Environment:
    """The dashboard's template environment (autoescaping on, undefined names an error)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("qw_core.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, ago=ago, seconds=seconds, number=number, short=short)
    env.globals.update(
        pretty=reads.pretty,
        chart=chart.bars,
        split_label=reads.split_label,
        user_frames=tracebacks.user_frames,
    )
    return env


def url(root: str, path: str, /, **params: Any) -> str:
    """``path`` under the dashboard's mount point, with the query ``params`` that are not
    ``None`` or empty."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")}, doseq=True)
    return f"{root}{path}" + (f"?{query}" if query else "")


def when(timestamp: float | None) -> str:
    """A time as local ``YYYY-MM-DD HH:MM:SS``; ``-`` for none."""
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def ago(timestamp: float | None, now: float | None = None) -> str:
    """How long ago ``timestamp`` was (or how long until it, for a time ahead)."""
    if timestamp is None:
        return "-"
    delta = (time.time() if now is None else now) - timestamp
    text = seconds(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def seconds(value: float | None) -> str:
    """A duration: ``4s``, ``3m 20s``, ``2h 5m``, ``3d 4h``."""
    if value is None:
        return "-"
    whole = int(value)
    if whole < 60:
        return f"{value:.1f}s" if value < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def number(value: float) -> str:
    """``12,345``; a fraction with one decimal."""
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def short(job_id: str, length: int = 13) -> str:
    """The start of a long id (the page links to the whole)."""
    return job_id if len(job_id) <= length else job_id[: length - 1] + "…"
