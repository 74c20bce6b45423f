"""``qw enqueue``: queue jobs from a JSON argument, a file, or stdin.

All input is read and parsed before the broker is even opened, so malformed input queues
nothing. Jobs go to the broker in batches (one ``queue_jobs`` call per
:data:`BATCH_SIZE` jobs, which a networked backend serves in one round trip), each job's
id is printed on stdout as soon as its batch is stored, and ``qw_job_queued`` fires for
each, as it would in any program that queues through qw.

A backend asked to confirm that replicas have the jobs (``?wait_replicas=N`` on a Redis
URL) may store a batch and not get that confirmation in time: the ids of the batch are
printed all the same (the jobs are queued), then the error says so, and the command
exits 1, so that a script running it does not queue the same jobs again.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from qw_cli.errors import CliError
from qw_cli.jobinput import decode, parse_document, parse_lines
from qw_cli.options import DURATION, backend_options, opened_broker, plugin_option, split_plugin_names
from qw_cli.output import Progress, quiet_option
from qw_core.errors import ConfigurationError, JobsNotReplicated, JobTooLarge, UniqueJobsUnsupported
from qw_core.models import Job
from qw_core.naming import check_manager_name
from qw_core.plugins import PluginConfig, make_plugin_manager
from qw_core.policy import RETRY_META_KEY, TIMEOUT_META
from qw_core.unique import Unique, unique_of, with_unique

if TYPE_CHECKING:
    import pluggy

    from qw_core.broker import Inspector, Producer
    from qw_core.models import JSON

#: Jobs per ``queue_jobs`` call.
BATCH_SIZE = 1000


@click.command(short_help="Queue jobs from JSON (argument, file or stdin).")
@backend_options
@click.option(
    "--queue",
    metavar="NAME",
    help="Queue on the named queue NAME (taken by workers run with --queue NAME; 'default' is the "
    "shared queue).  [default: the shared queue]",
)
@click.option("--manager", metavar="M", help="Queue on manager M's own queue (only its workers take it).")
@click.option("--worker", metavar="W", help="Queue straight onto worker W's held list.")
@click.option(
    "-f",
    "--file",
    "path",
    metavar="FILE",
    help="Read jobs from FILE ('-' for stdin): one JSON document, or JSON Lines (one job per line).",
)
@click.option(
    "--delay",
    type=DURATION,
    metavar="DURATION",
    help="Let the jobs be taken only after this long (30, 30s, 5m, 2h, 1d).",
)
@click.option(
    "--at",
    "at_text",
    metavar="ISO-TIME",
    help="Let the jobs be taken only from this time (2030-01-31T09:00:00+01:00; no offset: local time).",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    metavar="N",
    help="Retry these jobs up to N times, whatever the manager's --max-retries (meta retry.max_retries).",
)
@click.option(
    "--timeout",
    type=DURATION,
    metavar="DURATION",
    help="Kill a job's worker and fail the job (kind timeout) if it runs longer than this, "
    "whatever the manager's --job-timeout (meta timeout).",
)
@click.option(
    "--unique",
    "unique_key",
    metavar="KEY",
    help="Queue the job only if no job with unique key KEY is queued, delayed or running; else print "
    "that job's id (and say so on stderr). One job only.",
)
@click.option(
    "--unique-until",
    type=click.Choice(["end", "start"]),
    help="With --unique: hold the key until the job ends (default) or until a worker starts it.",
)
@click.option(
    "--unique-for",
    "unique_ttl",
    type=DURATION,
    metavar="DURATION",
    help="With --unique: hold the key this long from now, whatever the job does (a throttle).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Queue for a --manager or --worker that is not running (it takes the jobs when it starts).",
)
@plugin_option
@quiet_option
@click.argument("data", required=False)
def enqueue(
    *,
    backend: str,
    url: str | None,
    queue: str | None,
    manager: str | None,
    worker: str | None,
    path: str | None,
    delay: float | None,
    at_text: str | None,
    max_retries: int | None,
    timeout: float | None,
    unique_key: str | None,
    unique_until: str | None,
    unique_ttl: float | None,
    force: bool,
    plugins: tuple[str, ...],
    quiet: bool,
    data: str | None,
) -> None:
    """Queue jobs and print their ids, one per line.

    DATA is one job's data as a JSON string; '-' (or --file -) reads stdin instead. A file
    or stdin may hold one JSON document or many (JSON Lines): all are parsed first, then
    queued together, so bad input queues nothing. Many jobs are queued in batches: on a
    terminal, a progress bar on stderr shows how far it got (unless --quiet). At the end,
    stderr says how many were queued (not with --quiet).

    \b
    Examples:
      qw enqueue '{"hello": "world"}'
      qw enqueue --manager web1 '{"n": 7}'
      qw enqueue --queue emails '{"to": "ann@example.com"}'
      qw enqueue --file jobs.jsonl
      qw enqueue --delay 30s '{"remind": "me"}'
      qw enqueue --timeout 5m '{"report": "monthly"}'
      qw enqueue --unique report:2026-01 '{"report": "monthly"}'
      producer | qw enqueue -
    """
    _check_places(queue, manager, worker, delayed=delay is not None or at_text is not None)
    due_at = _due_at(delay, at_text)
    meta = _meta(max_retries, timeout)
    unique = _unique(unique_key, unique_until, unique_ttl)
    source, lines = _read_payloads(data, path)
    if unique is not None and len(lines) != 1:
        raise click.UsageError(f"--unique gives every job one key: queue one job with it, not {len(lines)}")
    modules, blocked = split_plugin_names(plugins)
    hook = make_plugin_manager(PluginConfig(modules=modules, disabled=blocked)).hook
    with opened_broker(backend, url) as broker:
        if manager is not None:  # a worker's name (m.123) is refused even with --force
            check_manager_name(broker, manager)
        if not force:
            _refuse_unknown(broker, manager, worker)
        jobs = [
            Job.new(payload, manager=manager, worker=worker, queue=queue, meta=meta) for _, payload in lines
        ]
        if unique is not None:
            _queue_unique(broker, with_unique(jobs[0], unique), delay or 0.0, due_at, hook, quiet=quiet)
            return
        line_of = {job.id: line for job, (line, _) in zip(jobs, lines, strict=True)}
        progress = Progress("queued", len(jobs), quiet=quiet or len(jobs) <= BATCH_SIZE)
        queued = 0
        for start in range(0, len(jobs), BATCH_SIZE):
            batch = jobs[start : start + BATCH_SIZE]
            try:
                broker.queue_jobs(batch, delay=delay or 0.0, at=due_at)
            except JobTooLarge as exc:
                progress.clear()
                raise _too_large(exc, source, line_of, queued) from None
            except JobsNotReplicated as exc:
                stored = {*exc.confirmed, *exc.job_ids}
                _announce([job for job in batch if job.id in stored], hook)
                _said_so_far(queued + len(stored), len(jobs))
                raise CliError(f"{exc} (their ids are printed above)") from None
            except Exception:
                progress.clear()
                _said_so_far(queued, len(jobs))
                raise
            progress.clear()
            _announce(batch, hook)
            queued += len(batch)
            progress.show(queued)
        progress.clear()
    if not quiet:
        click.echo(f"queued {queued} job{'s' if queued != 1 else ''}", err=True)


def _check_places(queue: str | None, manager: str | None, worker: str | None, *, delayed: bool) -> None:
    """Refuse options that send a job to two places, or delay one sent to a worker."""
    if manager is not None and worker is not None:
        raise click.UsageError("give --manager or --worker, not both")
    if queue is not None and (manager is not None or worker is not None):
        raise click.UsageError(
            f"give --queue or --{'manager' if manager is not None else 'worker'}, not both"
        )
    if delayed and worker is not None:
        raise click.UsageError("a job queued on a worker directly cannot be delayed")


def _meta(max_retries: int | None, timeout: float | None) -> dict[str, JSON]:
    """The jobs' meta from ``--max-retries`` and ``--timeout``."""
    meta: dict[str, JSON] = {} if max_retries is None else {RETRY_META_KEY: {"max_retries": max_retries}}
    if timeout is not None:
        if timeout <= 0:
            raise click.BadParameter("must be longer than 0", param_hint="'--timeout'")
        meta[TIMEOUT_META] = timeout
    return meta


def _unique(key: str | None, until: str | None, ttl: float | None) -> Unique | None:
    """The ``--unique`` options as a :class:`Unique` (``None``: not unique)."""
    if key is None:
        if until is not None or ttl is not None:
            raise click.UsageError("--unique-until and --unique-for go with --unique KEY")
        return None
    if until is not None and ttl is not None:
        raise click.UsageError("give --unique-until or --unique-for, not both")
    try:
        return Unique(key, until=until or "end", ttl=ttl)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="'--unique'") from None


def _queue_unique(
    broker: Producer, job: Job, delay: float, due_at: float | None, hook: pluggy.HookRelay, *, quiet: bool
) -> None:
    """Queue one unique job: its id, or the id of the job that holds its key (with a note)."""
    try:
        [queued] = broker.queue_jobs_unique([job], delay=delay, at=due_at)
    except UniqueJobsUnsupported as exc:
        raise CliError(str(exc)) from None
    except JobTooLarge as exc:
        raise CliError(
            f"the job encodes to {exc.size} bytes, over the limit of {exc.limit}; {exc.hint}"
        ) from None
    if queued.created:
        _announce([job], hook)
        if not quiet:
            click.echo("queued 1 job", err=True)
        return
    click.echo(queued.id)
    if not quiet:
        key = unique_of(job)
        held = key.key if key is not None else ""
        click.echo(
            f"qw: not queued: job {queued.id} holds unique key {held!r} (queued, delayed or running); "
            "its id is printed",
            err=True,
        )


def _due_at(delay: float | None, at_text: str | None) -> float | None:
    """The time ``--at`` names, in seconds since the epoch (``None`` without one). The time
    itself is stored, so reading a slow input first does not make the jobs late."""
    if at_text is None:
        return None
    if delay is not None:
        raise click.UsageError("give --delay or --at, not both")
    text = at_text.strip()
    try:  # Python 3.10's fromisoformat does not read a trailing Z
        when = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise click.BadParameter(
            f"{at_text!r} is not an ISO 8601 time such as 2030-01-31T09:00:00+01:00", param_hint="'--at'"
        ) from None
    try:
        return when.timestamp()
    except (ValueError, OverflowError, OSError):  # 0001-01-01 in local time falls in year 0
        raise click.BadParameter(f"{at_text!r} is out of range", param_hint="'--at'") from None


def _refuse_unknown(broker: Inspector, manager: str | None, worker: str | None) -> None:
    """Refuse a manager or worker that is not running: nothing would ever take the jobs."""
    if manager is not None:
        broker.check_name(manager)
        running = broker.managers()
        if manager not in running:
            known = f"running: {', '.join(running)}" if running else "none is running"
            raise CliError(f"no manager named {manager!r} is running ({known}); queue anyway with --force")
    if worker is not None:
        broker.check_name(worker)
        if not any(worker in broker.workers(name) for name in broker.managers()):
            raise CliError(
                f"no worker named {worker!r} is running (see 'qw workers'); queue anyway with --force"
            )


def _too_large(exc: JobTooLarge, source: str, line_of: dict[str, int], queued: int) -> CliError:
    _said_so_far(queued, len(line_of))
    where = f"{source}, line {line_of[exc.job_id]}" if exc.job_id in line_of else source
    return CliError(
        f"{where}: the job encodes to {exc.size} bytes, over the limit of {exc.limit}; {exc.hint}"
    )


def _said_so_far(queued: int, total: int) -> None:
    if queued:  # earlier batches are stored: say so, their ids are printed above
        click.echo(f"qw: queued {queued} of {total} jobs before this error", err=True)


def _read_payloads(data: str | None, path: str | None) -> tuple[str, list[tuple[int, JSON]]]:
    """Every job's data, parsed from the one source given, with the line each starts on;
    and how messages name the source."""
    if data is not None and path is not None:
        raise click.UsageError("give DATA or --file, not both")
    if data is None and path is None:
        raise click.UsageError("give the job data as DATA, --file FILE, or '-' to read stdin")
    if data is not None and data != "-":
        return "the DATA argument", [(1, parse_document(data, "the DATA argument"))]
    if path is None or path == "-":
        return "stdin", parse_lines(decode(sys.stdin.buffer.read(), "stdin"), "stdin")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path, parse_lines(decode(raw, path), path)


def _announce(batch: Sequence[Job], hook: pluggy.HookRelay) -> None:
    """Print each stored job's id and fire ``qw_job_queued`` for it."""
    for job in batch:
        hook.qw_job_queued(job=job)
        click.echo(job.id)
