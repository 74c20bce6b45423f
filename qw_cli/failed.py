"""``qw failed``: list, show, requeue and purge the jobs in the failed-job registry.

A job lands in the registry when its target raised and no retry was left (or none was
configured), or when its stored data could not be read. Every command here goes through
the broker's failed-job methods, so it works on any backend that has a server.

``--url``/``--backend`` may be given to the group (``qw failed --url U show ID``) or to a
subcommand (``qw failed show ID --url U``); the subcommand's win.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from qw_cli.errors import CliError
from qw_cli.options import DEFAULT_BACKEND, backend_options, json_option, opened_broker
from qw_cli.output import Cell, Progress, echo_json, echo_table, quiet_option
from qw_core.tracebacks import user_frames

if TYPE_CHECKING:
    from qw_core.broker import Administrator, Inspector
    from qw_core.models import FailedJob

#: How the shared queue is named in output (as ``qw status`` names it).
SHARED = "shared"
#: The longest error text shown in the table.
ERROR_WIDTH = 72


@click.group(invoke_without_command=True, short_help="List, show, requeue or purge failed jobs.")
@backend_options
@json_option
@click.option(
    "-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="List this many."
)
@click.pass_context
def failed(ctx: click.Context, *, backend: str, url: str | None, as_json: bool, limit: int) -> None:
    """List the most recently failed jobs, newest first (with no subcommand).

    ATTEMPTS is how many times the job ran. A failed job keeps its data, the exception
    (type, message, traceback), the worker and the time; the registry keeps a bounded
    number for a bounded time (qw run --failed-max, --failed-max-age).

    \b
    Examples:
      qw failed
      qw failed show 6f1c...
      qw failed requeue --all
      qw failed purge
    """
    ctx.obj = {"backend": backend, "url": url}
    if ctx.invoked_subcommand is not None:
        return
    with opened_broker(backend, url) as broker:
        total = broker.failed_count()
        found = broker.failed_jobs(limit=limit)
    if as_json:
        echo_json([describe(item) for item in found])
        return
    rows: list[list[Cell]] = [
        [_time(item.failure.failed_at), item.job.id, _queue(item), item.job.attempts, _error(item)]
        for item in found
    ]
    echo_table(["failed at", "id", "queue", "attempts", "error"], rows)
    if total > len(found):
        click.echo(f"({len(found)} of {total} shown; --limit N shows more)", err=True)


@failed.command(short_help="Show one failed job in full.")
@backend_options
@json_option
@click.option(
    "--full-traceback", is_flag=True, help="Show qw's and pluggy's own frames in the traceback too."
)
@click.argument("job_id", metavar="ID")
def show(*, backend: str, url: str | None, as_json: bool, full_traceback: bool, job_id: str) -> None:
    """Show failed job ID (or the one whose id starts with ID): its data, metadata, the
    exception and its traceback.

    The traceback shows your code's frames; --full-traceback adds the frames of qw and
    pluggy that called it (--json always has the whole traceback).
    """
    with _broker(backend, url) as broker:
        item = broker.get_failed(resolve_id(broker, job_id))
    if item is None:
        raise CliError(f"no failed job {job_id!r} (see 'qw failed')")
    record = describe(item, traceback=True)
    if as_json:
        echo_json(record)
        return
    for key in ("id", "queue", "attempts", "failed_at", "worker", "kind"):
        click.echo(f"{key.replace('_', ' ') + ':':<11} {record[key] if record[key] is not None else '-'}")
    click.echo(f"{'error:':<11} {record['exc_type']}: {record['message']}")
    click.echo(f"{'data:':<11} {json.dumps(record['data'], ensure_ascii=False)}")
    if record["meta"]:
        click.echo(f"{'meta:':<11} {json.dumps(record['meta'], ensure_ascii=False)}")
    if record["traceback"]:
        click.echo("traceback:")
        text = record["traceback"] if full_traceback else user_frames(record["traceback"])
        click.echo(text.rstrip("\n"))


@failed.command(short_help="Put failed jobs back on their queues.")
@backend_options
@click.option("--all", "everything", is_flag=True, help="Requeue every failed job.")
@quiet_option
@click.argument("job_ids", metavar="[ID]...", nargs=-1)
def requeue(
    *, backend: str, url: str | None, everything: bool, quiet: bool, job_ids: tuple[str, ...]
) -> None:
    """Put failed jobs back on the queue each came from, with attempts reset to 0.

    Prints each requeued id. An ID may be the start of one (as with git's hashes); an ID
    that is not in the registry is an error (the others are requeued all the same).

    --all requeues the jobs that are in the registry when it starts, the oldest failure
    first, in batches on the server (on a terminal, a progress bar on stderr shows how far
    it got, unless --quiet); a job that fails again meanwhile is not requeued twice, and
    one that cannot be requeued (a job with its id, or one holding its unique key, is queued,
    held or delayed) stays in the registry. At the end, stderr says how many were requeued (not with --quiet).
    """
    if everything == bool(job_ids):
        raise click.UsageError("give the IDs of failed jobs, or --all")
    with _broker(backend, url) as broker:
        if everything:
            _requeue_all(broker, quiet=quiet)
            return
        wanted = list(dict.fromkeys(resolve_id(broker, job_id) for job_id in job_ids))
        missing, kept = [], []
        for job_id in wanted:
            if broker.requeue_failed(job_id):
                click.echo(job_id)
            elif broker.get_failed(job_id) is not None:
                kept.append(job_id)
            else:
                missing.append(job_id)
    done = len(wanted) - len(missing) - len(kept)
    if not quiet:
        click.echo(f"requeued {done} job{'s' if done != 1 else ''}", err=True)
    if kept:
        raise CliError(
            f"job {kept[0]} stays in the failed registry"
            + (f" (and {len(kept) - 1} more)" if len(kept) > 1 else "")
            + ": a job with its id, or one holding its unique key, is queued, delayed or running; "
            "requeue it once that job has ended"
        )
    if missing:
        raise CliError(
            f"no failed job {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )


def _requeue_all(broker: Administrator, *, quiet: bool) -> None:
    """``qw failed requeue --all``: the ids on stdout batch by batch, as the broker
    requeues them; progress on a terminal; the count, and what is left, on stderr (unless
    ``quiet``)."""
    progress = Progress("requeued", broker.failed_count(), quiet=quiet)
    done = 0

    def requeued(ids: Sequence[str]) -> None:
        nonlocal done
        done += len(ids)
        if ids:
            progress.clear()
            click.echo("\n".join(ids))
        progress.show(done)

    done = broker.requeue_all_failed(progress=requeued)
    progress.clear()
    if quiet:
        return
    left = broker.failed_count()
    note = f" ({left} left in the failed registry: see 'qw failed')" if left else ""
    click.echo(f"requeued {done} job{'s' if done != 1 else ''}{note}", err=True)


@failed.command(short_help="Delete failed jobs.")
@backend_options
@click.option("--all", "everything", is_flag=True, help="Delete every failed job.")
@quiet_option
@click.argument("job_ids", metavar="[ID]...", nargs=-1)
def purge(*, backend: str, url: str | None, everything: bool, quiet: bool, job_ids: tuple[str, ...]) -> None:
    """Delete the failed jobs IDs from the registry, or every failed job with --all.

    An ID may be the start of one; an ID that is not in the registry is an error (the others
    are deleted all the same).
    --all deletes the jobs that are in the registry when it starts, in batches on the
    server (on a terminal, a progress bar on stderr shows how far it got, unless --quiet).
    At the end, stderr says how many were deleted (not with --quiet).
    """
    if everything == bool(job_ids):
        raise click.UsageError("give the IDs of failed jobs, or --all")
    with _broker(backend, url) as broker:
        wanted = list(dict.fromkeys(resolve_id(broker, job_id) for job_id in job_ids))
        missing = [job_id for job_id in wanted if broker.get_failed(job_id) is None]
        count = _purge_all(broker, quiet=quiet) if everything else broker.purge_failed(wanted)
    if not quiet:
        click.echo(f"purged {count} failed job{'s' if count != 1 else ''}", err=True)
    if missing:
        raise CliError(
            f"no failed job {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )


#: How many matching ids an ambiguous prefix's error names.
SHOWN_MATCHES = 3


def resolve_id(broker: Inspector, given: str, *, failed: bool = True) -> str:
    """The job ``given`` names: the id itself, or the one id that starts with it (as git
    takes the start of a hash); ``given`` itself when none does (the caller says so).

    :param failed: among failed jobs only; else among every job the broker knows.
    :raises CliError: more than one such job's id starts with ``given``.
    """
    known = (
        broker.get_failed(given) is not None if failed else broker.job_status(given).state.value != "unknown"
    )
    return given if known else unique_start(broker, given, failed=failed)


def unique_start(broker: Inspector, given: str, *, failed: bool = True) -> str:
    """The one id (of a failed job, or of any job the broker knows) that starts with
    ``given``; ``given`` itself when none does.

    :raises CliError: more than one does; or ``given`` is empty, the start of every id (an
        unset shell variable, ``qw failed purge "$ID"``, must not name the only failed job).
    """
    if not given:
        raise CliError("an empty ID names no job: give a job's id, or the start of one")
    find = broker.failed_ids_with_prefix if failed else broker.job_ids_with_prefix
    found = find(given, limit=SHOWN_MATCHES + 1)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        which = "failed jobs'" if failed else "jobs'"
        shown = ", ".join(sorted(found)[:SHOWN_MATCHES]) + (", ..." if len(found) > SHOWN_MATCHES else "")
        raise CliError(f"{given!r} is the start of several {which} ids ({shown}): give more of it")
    return given


def describe(item: FailedJob, *, traceback: bool = False) -> dict[str, Any]:
    """A failed job as the JSON output shows it."""
    record: dict[str, Any] = {
        "id": item.job.id,
        "queue": _queue(item),
        "attempts": item.job.attempts,
        "failed_at": _time(item.failure.failed_at),
        "worker": item.failure.worker,
        "kind": item.failure.kind,
        "exc_type": item.failure.exc_type,
        "message": item.failure.message,
        "data": item.job.data,
        "meta": dict(item.job.meta),
        "queued_at": None if item.job.queued_at is None else _time(item.job.queued_at),
    }
    if traceback:
        record["traceback"] = item.failure.traceback
    return record


def _broker(backend: str, url: str | None) -> Any:
    """The broker named on the subcommand, else on the group (``qw failed --url U show``)."""
    ctx = click.get_current_context()
    group = ctx.parent.obj if ctx.parent is not None and ctx.parent.obj else {}
    default = click.core.ParameterSource.DEFAULT
    if ctx.get_parameter_source("backend") is default and backend == DEFAULT_BACKEND:
        backend = group.get("backend", backend)
    if url is None:
        url = group.get("url")
    return opened_broker(backend, url)


def _purge_all(broker: Administrator, *, quiet: bool) -> int:
    """``qw failed purge --all``, with progress on a terminal (unless ``quiet``); how many
    were deleted."""
    progress = Progress("purged", broker.failed_count(), quiet=quiet)
    done = 0

    def purged(count: int) -> None:
        nonlocal done
        done += count
        progress.show(done)

    count = broker.purge_all_failed(progress=purged)
    progress.clear()
    return count


def _queue(item: FailedJob) -> str:
    return item.job.queue or item.job.manager or SHARED


def _time(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _error(item: FailedJob) -> str:
    name = item.failure.exc_type.removeprefix("builtins.")
    text = " ".join(f"{name}: {item.failure.message}".split())
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 3] + "..."
