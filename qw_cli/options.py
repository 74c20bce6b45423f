"""Options several commands share, with their ``QW_*`` environment variables.

Flags win over environment variables (click's own precedence: command line, then
``envvar``, then the default). ``QW_PLUGINS`` may separate module names with spaces or
commas.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from qw_core.backends import open_broker
from qw_core.errors import ConfigurationError

if TYPE_CHECKING:
    from qw_core.broker import Broker

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_BACKEND = "redis"


def backend_options(func: F) -> F:
    """``--backend NAME`` and ``--url URL`` (``QW_BACKEND``, ``QW_URL``)."""
    func = click.option(
        "--url",
        envvar="QW_URL",
        show_envvar=True,
        metavar="URL",
        help="Where the backend's server is; default: the backend's own (redis://localhost:6379/0).",
    )(func)
    return click.option(
        "--backend",
        envvar="QW_BACKEND",
        show_envvar=True,
        default=DEFAULT_BACKEND,
        show_default=True,
        metavar="NAME",
        help="Backend to use: an entry point of the qw.backends group (see 'qw backends').",
    )(func)


def plugin_option(func: F) -> F:
    """``-p/--plugin MODULE``, repeatable (``QW_PLUGINS``, space or comma separated)."""
    return click.option(
        "-p",
        "--plugin",
        "plugins",
        multiple=True,
        envvar="QW_PLUGINS",
        show_envvar=True,
        metavar="MODULE",
        callback=_split_plugins,
        help="Also load this module as a plugin (repeatable).",
    )(func)


def json_option(func: F) -> F:
    """``--json``: print machine-readable JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def _split_plugins(ctx: click.Context, param: click.Parameter, value: Iterable[str]) -> tuple[str, ...]:
    names: list[str] = []
    for item in value:
        names.extend(name for name in re.split(r"[\s,]+", item) if name)
    return tuple(dict.fromkeys(names))  # drop repeats, keep order


@contextlib.contextmanager
def opened_broker(backend: str, url: str | None) -> Iterator[Broker]:
    """The broker of ``backend`` at ``url``, closed afterwards.

    Refuses a backend whose jobs live inside one process (``memory``): a command run
    from the shell would only ever see an empty broker of its own.
    """
    broker = open_broker(backend, url)
    if not broker.capabilities.shared_by_url:
        broker.close()
        raise ConfigurationError(
            f"the {backend!r} backend keeps its jobs inside the process that runs the manager; "
            "this command cannot reach them (use a backend with a server, such as redis)"
        )
    try:
        yield broker
    finally:
        broker.close()
