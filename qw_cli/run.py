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
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import click

from qw_cli.options import (
    DEFAULT_BACKEND,
    DURATION,
    backend_options,
    plugin_option,
    retry_options,
    split_plugin_names,
)
from qw_cli.schedules import load_schedules, parse_schedule
from qw_core.backends import load_backend, open_broker
from qw_core.eventloops import DEFAULT_EVENT_LOOP, EVENT_LOOPS
from qw_core.execution import DEFAULT_ASYNC_CONCURRENCY, MAX_CONCURRENCY
from qw_core.liveness import DEFAULT_HEARTBEAT, DEFAULT_MAX_RECOVERIES, DEFAULT_TTL
from qw_core.logsetup import LEVELS, configure_logging
from qw_core.models import Job
from qw_core.plugins import PluginConfig, make_plugin_manager
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits, RetryPolicy
from qw_core.results import DEFAULT_RESULT_TTL
from qw_core.worker import DEFAULT_PREFETCH

if TYPE_CHECKING:
    from qw_core.broker import Broker, Producer
    from qw_core.models import JSON
    from qw_core.schedules import Schedule

#: The plugin module ``--metrics-port`` loads.
METRICS_PLUGIN = "qw_core.contrib.prometheus"


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
    help="The manager's name (refused if a running manager has it).  [default: the host name, or "
    "<host>-2, -3... if a manager on this host has it]",
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
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    envvar="QW_QUEUES",
    show_envvar=True,
    help="Serve this named queue (repeatable): the workers take from the queues in the order given, "
    "a job on an earlier queue always first, after their manager's own queue; 'default' is the "
    "shared queue (QW_QUEUES: names separated by spaces).  [default: the shared queue only]",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    envvar="QW_CONCURRENCY",
    show_envvar=True,
    metavar="N",
    help=f"Jobs each worker process runs at once: tasks on an event loop for an async def target, "
    f"threads for a plain function (which must then be thread-safe).  [default: "
    f"{DEFAULT_ASYNC_CONCURRENCY} for async def, 1 for a plain function]",
)
@click.option(
    "--event-loop",
    type=click.Choice(EVENT_LOOPS),
    default=DEFAULT_EVENT_LOOP,
    envvar="QW_EVENT_LOOP",
    show_envvar=True,
    show_default=True,
    help="The event loop of an async def target's jobs: auto is uvloop when it is installed "
    "(pip install 'qw-core[uvloop]'), the standard asyncio loop otherwise.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=DEFAULT_PREFETCH,
    show_default=True,
    help="Most jobs a worker may take at once (it batches only while the queue is deep and jobs are quick).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="On stop, wait this long for running jobs, then kill them (they are put back).  [default: wait]",
)
@click.option(
    "--job-timeout",
    type=DURATION,
    metavar="DURATION",
    help='Kill the worker of a job running longer, and fail the job (a job\'s meta "timeout", '
    "in seconds, overrides).  [default: none]",
)
@click.option(
    "--heartbeat",
    type=DURATION,
    default=f"{DEFAULT_HEARTBEAT:g}s",
    show_default=True,
    metavar="DURATION",
    help="How often the manager refreshes its and its workers' heartbeats.",
)
@click.option(
    "--heartbeat-ttl",
    type=DURATION,
    default=f"{DEFAULT_TTL:g}s",
    show_default=True,
    metavar="DURATION",
    help="A worker without a heartbeat for this long is presumed dead: its jobs are put back.",
)
@click.option(
    "--max-recoveries",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_RECOVERIES,
    show_default=True,
    metavar="N",
    help="Put a job back at most N times after its worker died holding it; then fail it.",
)
@click.option(
    "--max-jobs-per-worker",
    type=click.IntRange(min=1),
    envvar="QW_MAX_JOBS_PER_WORKER",
    show_envvar=True,
    metavar="N",
    help="Replace a worker once it ran N jobs: it finishes what it has in hand, exits and a new one "
    "starts at once (for targets that leak memory).  [default: never]",
)
@click.option(
    "--max-worker-memory",
    type=click.IntRange(min=1),
    envvar="QW_MAX_WORKER_MEMORY",
    show_envvar=True,
    metavar="MB",
    help="Replace a worker once its memory (RSS, checked after each job) is over MB megabytes: it "
    "finishes what it has in hand, exits and a new one starts at once.  [default: never]",
)
@retry_options
@click.option(
    "--result-ttl",
    type=DURATION,
    default=f"{DEFAULT_RESULT_TTL:g}s",
    show_default=True,
    metavar="DURATION",
    help="Keep what a target returns this long ('qw result ID' reads it), or, when it returns None, "
    "that its job succeeded ('qw job ID' says so); 0: keep nothing.",
)
@click.option(
    "--failed-max",
    type=click.IntRange(min=0),
    default=DEFAULT_FAILED_LIMITS.max_count,
    show_default=True,
    metavar="N",
    help="Keep at most N failed jobs (the oldest are deleted first).",
)
@click.option(
    "--failed-max-age",
    type=DURATION,
    default="30d",
    show_default=True,
    metavar="DURATION",
    help="Delete failed jobs older than this.",
)
@click.option(
    "-o",
    "--option",
    "plugin_options",
    multiple=True,
    metavar="NAME=VALUE",
    help="A plugin setting (repeatable); VALUE is JSON, or else a string.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    metavar="PORT",
    help=f"Serve Prometheus metrics on PORT (loads {METRICS_PLUGIN}; needs qw-core[prometheus]).",
)
@click.option(
    "--embedded",
    is_flag=True,
    help="Run against a Redis-protocol server inside this process (no Redis needed; "
    "pip install 'qw-core[embedded]').",
)
@click.option(
    "--port",
    type=click.IntRange(min=1, max=65535),
    metavar="PORT",
    help="With --embedded: serve on this port, so the URL stays the same from one run to the next.  "
    "[default: a free port]",
)
@click.option(
    "--schedule",
    "schedule_texts",
    multiple=True,
    metavar="CRON[=JSON]",
    help="Queue a job with this data (JSON; default {}) at each tick of the cron expression, in UTC "
    "(repeatable; 5 fields, or 6 with seconds first). Every manager given the same schedule may run "
    "it: each tick is queued once. A file (--schedules) takes ids, zones and queues.",
)
@click.option(
    "--schedules",
    "schedules_file",
    envvar="QW_SCHEDULES",
    show_envvar=True,
    metavar="FILE",
    help='Periodic jobs from a JSON file: a list of {"cron": ..., "id": ..., "data": ..., "queue": ..., '
    '"timezone": ..., "missed": "latest"|"all", "catch_up": N}.',
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
    queues: tuple[str, ...],
    concurrency: int | None,
    event_loop: str,
    prefetch: int,
    grace: float | None,
    job_timeout: float | None,
    heartbeat: float,
    heartbeat_ttl: float,
    max_recoveries: int,
    max_jobs_per_worker: int | None,
    max_worker_memory: int | None,
    max_retries: int,
    retry_backoff: float,
    retry_backoff_max: float,
    retry_jitter: float,
    retry_on: tuple[str, ...],
    no_retry_on: tuple[str, ...],
    result_ttl: float,
    failed_max: int,
    failed_max_age: float,
    plugin_options: tuple[str, ...],
    metrics_port: int | None,
    embedded: bool,
    port: int | None,
    sample_jobs: int,
    schedule_texts: tuple[str, ...],
    schedules_file: str | None,
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
      qw run --queue emails --queue default myapp.jobs:handle
      qw run --max-retries 5 --retry-backoff 2s --metrics-port 9100 myapp.jobs:handle
      qw run --schedule '0 3 * * *={"report": "nightly"}' myapp.jobs:handle
    """
    ctx = click.get_current_context()
    retry = RetryPolicy(
        max_retries=max_retries,
        backoff=retry_backoff,
        backoff_max=retry_backoff_max,
        jitter=retry_jitter,
        retry_on=retry_on,
        never_retry_on=no_retry_on,
    )
    config = plugin_config(plugins, plugin_options, metrics_port, retry)
    schedules = [parse_schedule(text) for text in schedule_texts]
    if schedules_file is not None:
        schedules += load_schedules(schedules_file)
    configure_logging(level)
    with contextlib.ExitStack() as stack:
        if port is not None and not embedded:
            raise click.UsageError("--port is the embedded server's: give --embedded too")
        if embedded:
            backend = _embedded_backend(ctx, backend)
            load_backend(backend)  # not installed: say what to install before serving anything
            url = stack.enter_context(_embedded_redis(port or 0))
            click.echo(
                f"qw: embedded Redis-protocol server at {url} (in memory, gone when qw run exits)", err=True
            )
            click.echo(f'qw: queue jobs with: qw enqueue --url {url} \'{{"hello": "world"}}\'', err=True)
        code = run_manager(
            target,
            open_broker(backend, url),
            workers=workers,
            name=name,
            plugins=config,
            queues=queues,
            result_ttl=result_ttl,
            concurrency=concurrency,
            event_loop=event_loop,
            prefetch=prefetch,
            grace=grace,
            sample_jobs=sample_jobs,
            schedules=schedules,
            failed_limits=FailedLimits(max_count=failed_max, max_age=failed_max_age),
            reliability=Reliability(
                job_timeout=job_timeout,
                heartbeat=heartbeat,
                heartbeat_ttl=heartbeat_ttl,
                max_recoveries=max_recoveries,
                max_jobs_per_worker=max_jobs_per_worker,
                max_worker_memory=max_worker_memory,
            ),
        )
    ctx.exit(code)


def plugin_config(
    names: tuple[str, ...], options: tuple[str, ...], metrics_port: int | None, retry: RetryPolicy
) -> PluginConfig:
    """The plugins and settings ``qw run`` hands the manager and its workers."""
    modules, blocked = split_plugin_names(names)
    settings: dict[str, JSON] = {}
    for item in options:
        name, equals, text = item.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="'-o' / '--option'")
        try:
            settings[name.strip()] = json.loads(text)
        except ValueError:
            settings[name.strip()] = text
    if metrics_port is not None:
        modules = (*modules, METRICS_PLUGIN) if METRICS_PLUGIN not in modules else modules
        settings["prometheus.port"] = metrics_port
    return PluginConfig(modules=modules, disabled=blocked, retry=retry, options=settings)


def _embedded_backend(ctx: click.Context, backend: str) -> str:
    """``--embedded`` means the redis backend at the embedded URL; refuse flags that disagree."""
    given = click.core.ParameterSource.COMMANDLINE
    if ctx.get_parameter_source("url") is given:
        raise click.UsageError("--embedded starts its own server; do not give --url")
    if ctx.get_parameter_source("backend") is given and backend != DEFAULT_BACKEND:
        raise click.UsageError(f"--embedded runs the {DEFAULT_BACKEND} backend, not {backend!r}")
    return DEFAULT_BACKEND


def _embedded_redis(port: int) -> contextlib.AbstractContextManager[str]:
    from qw_cli.embedded import embedded_redis

    return embedded_redis(port)


@attrs.frozen(kw_only=True)
class Reliability:
    """The manager's liveness, time-limit and recycling settings (``qw run --job-timeout``,
    ``--heartbeat``, ``--max-jobs-per-worker``...)."""

    job_timeout: float | None = None
    heartbeat: float = DEFAULT_HEARTBEAT
    heartbeat_ttl: float = DEFAULT_TTL
    max_recoveries: int | None = DEFAULT_MAX_RECOVERIES
    max_jobs_per_worker: int | None = None
    max_worker_memory: int | None = None


def run_manager(
    target: str,
    broker: Broker,
    *,
    workers: int | None,
    name: str | None,
    plugins: PluginConfig,
    queues: Sequence[str] = (),
    result_ttl: float = DEFAULT_RESULT_TTL,
    concurrency: int | None = None,
    event_loop: str = DEFAULT_EVENT_LOOP,
    prefetch: int = DEFAULT_PREFETCH,
    grace: float | None = None,
    sample_jobs: int = 0,
    failed_limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    reliability: Reliability | None = None,
    schedules: Sequence[Schedule] = (),
) -> int:
    """Build the manager on ``broker``, queue the sample jobs, run until stopped.

    Shared with ``qw-manager``. The broker is closed whatever happens (by the manager once
    it runs, here if building it fails).

    :return: the manager's exit code (0: a clean stop).
    """
    from qw_core.manager import Manager

    try:
        manager = Manager(
            target,
            broker,
            num_workers=workers,
            name=name,
            plugins=plugins,
            queues=queues,
            result_ttl=result_ttl,
            concurrency=concurrency,
            event_loop=event_loop,
            prefetch=prefetch,
            grace=grace,
            failed_limits=failed_limits,
            schedules=schedules,
            **attrs.asdict(reliability or Reliability()),
        )
        if sample_jobs:
            queue_sample_jobs(broker, manager.claim_name(), sample_jobs, plugins)
    except BaseException:
        broker.close()
        raise
    return manager.run()


def queue_sample_jobs(broker: Producer, manager: str, count: int, plugins: PluginConfig) -> None:
    """Queue ``count`` small jobs on ``manager``'s own queue (so no other manager takes them)."""
    jobs = [
        Job.new({"sample": n, "of": count, "hello": "world"}, manager=manager) for n in range(1, count + 1)
    ]
    broker.queue_jobs(jobs)
    hook = make_plugin_manager(plugins).hook
    for job in jobs:
        hook.qw_job_queued(job=job)
    logging.getLogger("qw").info("queued %d sample job(s) for manager %s", count, manager)
