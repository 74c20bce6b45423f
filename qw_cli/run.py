"""``qw run``: start a manager and its workers, and stop them cleanly on a signal.

The manager itself handles SIGTERM, SIGINT and SIGHUP (a warm stop: running jobs finish)
and returns an exit code, which becomes the command's. Log lines go to stderr, one per
event, as ``<time> <LEVEL> <message>``; the built-in logging plugin writes the job lines
(id, worker, duration, outcome).

``--embedded`` runs the manager against a Redis-protocol server inside this process (see
:mod:`qw_cli.embedded`), and ``--sample-jobs N`` queues N small jobs for this manager at
start: together they make a first run that needs nothing but ``pip install``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING, TextIO

import click

from qw_cli.options import DEFAULT_BACKEND, backend_options, plugin_option
from qw_core.backends import open_broker
from qw_core.models import Job
from qw_core.plugins import PluginConfig, make_plugin_manager

if TYPE_CHECKING:
    from qw_core.broker import Broker

#: ``--level`` choices and the logging levels they mean (``warn`` as the original had it).
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


@click.command(short_help="Run a manager and its workers on TARGET.")
@backend_options
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(min=1),
    envvar="QW_WORKERS",
    show_envvar=True,
    help="Worker processes to run.  [default: the number of CPUs]",
)
@click.option(
    "-n",
    "--name",
    envvar="QW_NAME",
    show_envvar=True,
    help="The manager's name.  [default: the host name]",
)
@click.option(
    "-l",
    "--level",
    type=click.Choice(list(LEVELS), case_sensitive=False),
    default="info",
    show_default=True,
    envvar="QW_LEVEL",
    show_envvar=True,
    help="Log level.",
)
@plugin_option
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs a worker may take at once.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="On stop, wait this long for running jobs, then kill them (they are put back).  [default: wait]",
)
@click.option(
    "--embedded",
    is_flag=True,
    help="Run against a Redis-protocol server inside this process (no Redis needed).",
)
@click.option(
    "--sample-jobs",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Queue N small sample jobs for this manager at start.",
)
@click.argument("target")
def run(
    *,
    backend: str,
    url: str | None,
    workers: int | None,
    name: str | None,
    level: str,
    plugins: tuple[str, ...],
    prefetch: int,
    grace: float | None,
    embedded: bool,
    sample_jobs: int,
    target: str,
) -> None:
    """Run a manager whose workers call TARGET(job_id, job_data) for each job.

    TARGET is 'package.module:function' (or the original 'package.module.function').
    SIGTERM, SIGINT or SIGHUP stop it after the running jobs finish; a second SIGINT
    stops at once (unfinished jobs are put back).

    \b
    Examples:
      qw run --embedded --sample-jobs 3 qw_core.examples:echo
      qw run -w 4 --url redis://redis.internal:6379/0 myapp.jobs:handle
    """
    ctx = click.get_current_context()
    configure_logging(level)
    with contextlib.ExitStack() as stack:
        if embedded:
            backend = _embedded_backend(ctx, backend)
            url = stack.enter_context(_embedded_redis())
            click.echo(
                f"qw: embedded Redis-protocol server at {url} (in memory, gone when qw run exits)", err=True
            )
            click.echo(f'qw: queue jobs with: qw enqueue --url {url} \'{{"hello": "world"}}\'', err=True)
        code = run_manager(
            target,
            open_broker(backend, url),
            workers=workers,
            name=name,
            plugins=PluginConfig(modules=plugins),
            prefetch=prefetch,
            grace=grace,
            sample_jobs=sample_jobs,
        )
    ctx.exit(code)


def _embedded_backend(ctx: click.Context, backend: str) -> str:
    """``--embedded`` means the redis backend at the embedded URL; refuse flags that disagree."""
    given = click.core.ParameterSource.COMMANDLINE
    if ctx.get_parameter_source("url") is given:
        raise click.UsageError("--embedded starts its own server; do not give --url")
    if ctx.get_parameter_source("backend") is given and backend != DEFAULT_BACKEND:
        raise click.UsageError(f"--embedded runs the {DEFAULT_BACKEND} backend, not {backend!r}")
    return DEFAULT_BACKEND


def _embedded_redis() -> contextlib.AbstractContextManager[str]:
    from qw_cli.embedded import embedded_redis

    return embedded_redis()


def run_manager(
    target: str,
    broker: Broker,
    *,
    workers: int | None,
    name: str | None,
    plugins: PluginConfig,
    prefetch: int = 1,
    grace: float | None = None,
    sample_jobs: int = 0,
) -> int:
    """Build the manager on ``broker``, queue the sample jobs, run until stopped.

    Shared with ``qw-manager``. The broker is closed whatever happens (by the manager once
    it runs, here if building it fails).

    :return: the manager's exit code (0: a clean stop).
    """
    from qw_core.manager import Manager

    try:
        manager = Manager(
            target, broker, num_workers=workers, name=name, plugins=plugins, prefetch=prefetch, grace=grace
        )
        if sample_jobs:
            queue_sample_jobs(broker, manager.name, sample_jobs, plugins)
    except BaseException:
        broker.close()
        raise
    return manager.run()


def queue_sample_jobs(broker: Broker, manager: str, count: int, plugins: PluginConfig) -> None:
    """Queue ``count`` small jobs on ``manager``'s own queue (so no other manager takes them)."""
    jobs = [
        Job.new({"sample": n, "of": count, "hello": "world"}, manager=manager) for n in range(1, count + 1)
    ]
    broker.queue_jobs(jobs)
    hook = make_plugin_manager(plugins).hook
    for job in jobs:
        hook.qw_job_queued(job=job)
    logging.getLogger("qw").info("queued %d sample job(s) for manager %s", count, manager)


def configure_logging(level: str) -> None:
    """Send log records at ``level`` and above to stderr, one line each.

    Adds one handler to the root logger (worker processes inherit it when forked) unless
    an earlier call already did.
    """
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(LEVELS[level.lower()])


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # not subscriptable on 3.10
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as logging's own
    last-resort handler does), so a replaced stderr is never written to after it closed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass
