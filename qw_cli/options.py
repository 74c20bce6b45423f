"""Options several commands share, with their ``QW_*`` environment variables.

Flags win over environment variables (click's own precedence: command line, then
``envvar``, then the default). ``QW_PLUGINS`` may separate module names with spaces or
commas.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click

from qw_cli.errors import shortened
from qw_core.backends import open_broker
from qw_core.errors import ConfigurationError
from qw_core.policy import RetryPolicy

if TYPE_CHECKING:
    from qw_core.broker import Broker

F = TypeVar("F", bound=Callable[..., Any])

YEAR = 365 * 86400.0
#: The longest duration any option takes (a job's delay included: see ``Broker.queue_jobs``).
MAX_DURATION = 100 * YEAR

DEFAULT_BACKEND = "redis"


def backend_options(func: F) -> F:
    """``--backend NAME`` and ``--url URL`` (``QW_BACKEND``, ``QW_URL``), which may also be
    given before the command (``qw --url URL status``): in that order of precedence, this
    command's flag, the flag before the command, the environment variable, the default."""
    func = click.option(
        "--url",
        envvar="QW_URL",
        show_envvar=True,
        metavar="URL",
        callback=_or_before_the_command,
        help="Where the backend's server is; default: the backend's own (redis://localhost:6379/0). "
        "Give a password through QW_URL rather than here (a command line is visible to every user). "
        "TLS: rediss://HOST:PORT/DB, with ?ssl_ca_certs=CA.pem (or SSL_CERT_FILE) for a private CA.",
    )(func)
    return click.option(
        "--backend",
        envvar="QW_BACKEND",
        show_envvar=True,
        default=DEFAULT_BACKEND,
        show_default=True,
        metavar="NAME",
        callback=_or_before_the_command,
        help="Backend to use: an entry point of the qw.backends group (see 'qw backends').",
    )(func)


def _or_before_the_command(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """The value of ``param`` given to this command, else the one given before it (to ``qw``)."""
    if param.name is None or ctx.get_parameter_source(param.name) is click.core.ParameterSource.COMMANDLINE:
        return value
    before = ctx.find_root().params.get(param.name)
    return value if before is None else before


def plugin_option(func: F) -> F:
    """``-p/--plugin MODULE``, repeatable (``QW_PLUGINS``, space or comma separated);
    ``-p no:NAME`` blocks a plugin instead, as in pytest (see :func:`split_plugin_names`)."""
    return click.option(
        "-p",
        "--plugin",
        "plugins",
        multiple=True,
        envvar="QW_PLUGINS",
        show_envvar=True,
        metavar="MODULE",
        callback=_split_plugins,
        help="Also load this module as a plugin; 'no:NAME' blocks the plugin NAME, built-in or "
        "installed (repeatable).",
    )(func)


if TYPE_CHECKING:
    _FloatParam = click.ParamType[float]
else:
    _FloatParam = click.ParamType


class Duration(_FloatParam):
    """Seconds, written ``30``, ``1.5``, ``250ms``, ``30s``, ``5m``, ``2h`` or ``7d``; at most
    :data:`MAX_DURATION` (a longer one is a slip of a unit or of digits)."""

    name = "duration"
    _PATTERN = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*", re.IGNORECASE)
    _UNITS: ClassVar[dict[str, float]] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        match = self._PATTERN.fullmatch(str(value))
        if match is None:
            self.fail(
                f"{shortened(str(value))!r} is not a duration (e.g. 30, 250ms, 30s, 5m, 2h, 7d)", param, ctx
            )
        number, unit = match.groups()
        seconds = float(number) * self._UNITS[(unit or "s").lower()]
        if not seconds <= MAX_DURATION:  # inf too
            self.fail(f"{shortened(str(value))!r} is longer than {MAX_DURATION / YEAR:g} years", param, ctx)
        return seconds


#: The ``--delay 30s`` kind of value.
DURATION = Duration()


def retry_options(func: F) -> F:
    """The ``--max-retries`` and ``--retry-*`` options that make the manager's retry policy."""
    default = RetryPolicy()
    for decorator in reversed(
        [
            click.option(
                "--max-retries",
                type=click.IntRange(min=0),
                default=default.max_retries,
                show_default=True,
                metavar="N",
                help="Run a failed job again up to N times (0: failed jobs go straight to 'qw failed').",
            ),
            click.option(
                "--retry-backoff",
                type=DURATION,
                default="1s",
                show_default=True,
                metavar="DURATION",
                help="Delay before the first retry; it doubles for each retry after.",
            ),
            click.option(
                "--retry-backoff-max",
                type=DURATION,
                default="5m",
                show_default=True,
                metavar="DURATION",
                help="The longest delay between two runs.",
            ),
            click.option(
                "--retry-jitter",
                type=click.FloatRange(0, 1),
                default=default.jitter,
                show_default=True,
                metavar="FRACTION",
                help="Shorten each delay by up to this fraction, at random.",
            ),
            click.option(
                "--retry-on",
                multiple=True,
                metavar="EXCEPTION",
                help="Retry only these exception types (repeatable; e.g. ConnectionError, myapp.Busy).",
            ),
            click.option(
                "--no-retry-on",
                multiple=True,
                metavar="EXCEPTION",
                help="Never retry these exception types (repeatable).",
            ),
        ]
    ):
        func = decorator(func)
    return func


def json_option(func: F) -> F:
    """``--json``: print machine-readable JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def _split_plugins(ctx: click.Context, param: click.Parameter, value: Iterable[str]) -> tuple[str, ...]:
    names: list[str] = []
    for item in value:
        names.extend(name for name in re.split(r"[\s,]+", item) if name)
    return tuple(dict.fromkeys(names))  # drop repeats, keep order


def split_plugin_names(names: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``-p`` values as (modules to load, plugin names to block): ``no:NAME`` blocks NAME."""
    modules = tuple(name for name in names if not name.startswith("no:"))
    blocked = tuple(name[3:] for name in names if name.startswith("no:"))
    return modules, blocked


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
