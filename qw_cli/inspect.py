"""``qw status``, ``qw managers``, ``qw workers`` and ``qw jobs``: what is running and waiting.

They only read, through the broker's query methods, so they work against any backend and
never disturb a running manager. Each has ``--json`` for scripts; the text forms are one
name per line (``managers``, ``workers``) or an aligned table (``status``, ``jobs``).

Where a job is: *queued* on the shared queue, a named queue or one manager's queue, or
*held* by a worker (taken and not finished, or queued straight onto that worker).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import click

from qw_cli.options import backend_options, json_option, opened_broker
from qw_cli.output import Cell, column_widths, echo_json, echo_json_array, echo_table, format_row

if TYPE_CHECKING:
    from qw_core.broker import Inspector

#: How the shared queue is named in output (``all:jobs`` in Redis).
SHARED = "shared"
#: How many jobs ``qw jobs`` lists without --limit or --all.
DEFAULT_LIMIT = 100
#: How many ids ``qw jobs`` asks the broker for at a time (Redis reads as many a command).
PAGE = 1000


@click.command(short_help="Show managers, workers, and job counts.")
@backend_options
@json_option
def status(*, backend: str, url: str | None, as_json: bool) -> None:
    """Show managers, their workers, and how many jobs wait, are delayed, held or failed.

    One row for the shared queue, one per named queue, one per manager (jobs on its own queue, delayed for it,
    and held by its workers in total), one per worker (jobs it holds), and one per stray
    queue: jobs queued for a manager or worker that is not running, which nothing takes
    until it runs (``qw move NAME`` hands them to the shared queue). Then the size of the
    failed-job registry (``qw failed`` lists it), and any problem the backend found that
    keeps jobs from moving (a queue key of the wrong type, say).
    """
    with opened_broker(backend, url) as broker:
        report = _status(broker)
    if as_json:
        echo_json(report)
        return
    rows: list[list[Cell]] = [["queue", SHARED, report["queued"], report["delayed"], None]]
    rows.extend(
        ["queue", queue["name"], queue["queued"], queue["delayed"], None] for queue in report["queues"]
    )
    for manager in report["managers"]:
        rows.append(["manager", manager["name"], manager["queued"], manager["delayed"], manager["held"]])
        rows.extend(["worker", worker["name"], None, None, worker["held"]] for worker in manager["workers"])
    rows.extend(["stray", stray["name"], stray["queued"], None, None] for stray in report["stray"])
    echo_table(["kind", "name", "queued", "delayed", "held"], rows)
    if report["stray"]:
        click.echo(
            "stray: jobs for a manager or worker that is not running; nothing takes them until it "
            "runs: 'qw move NAME' puts them on the shared queue (--to MANAGER: on its queue)"
        )
    click.echo(f"failed jobs: {report['failed']}")
    for problem in report["problems"]:
        click.echo(f"problem: {problem}")


def _status(broker: Inspector) -> dict[str, Any]:
    managers: list[dict[str, Any]] = []
    for name in broker.managers():
        held = {worker: broker.held_count(worker) for worker in broker.workers(name)}
        managers.append(
            {
                "name": name,
                "queued": broker.queued_count(name),
                "delayed": broker.delayed_count(name),
                "held": sum(held.values()),
                "workers": [{"name": worker, "held": count} for worker, count in held.items()],
            }
        )
    return {
        "backend": broker.describe(),
        "queued": broker.queued_count(None),
        "delayed": broker.delayed_count(None),
        "queues": [
            {
                "name": queue,
                "queued": broker.queued_count(queue=queue),
                "delayed": broker.delayed_count(queue=queue),
            }
            for queue in broker.named_queues()
        ],
        "failed": broker.failed_count(),
        "managers": managers,
        "stray": [{"name": name, "queued": count} for name, count in broker.stray_queues().items()],
        "problems": broker.problems(),
    }


@click.command(short_help="List running managers.")
@backend_options
@json_option
def managers(*, backend: str, url: str | None, as_json: bool) -> None:
    """List the running managers, one per line."""
    with opened_broker(backend, url) as broker:
        names = broker.managers()
    if as_json:
        echo_json(names)
    else:
        for name in names:
            click.echo(name)


@click.command(short_help="List running workers.")
@backend_options
@json_option
@click.argument("manager", required=False)
def workers(*, backend: str, url: str | None, as_json: bool, manager: str | None) -> None:
    """List the running workers (of MANAGER, or of every manager), one per line.

    --json prints an object mapping each manager to its workers.
    """
    with opened_broker(backend, url) as broker:
        names = [broker.check_name(manager)] if manager is not None else broker.managers()
        by_manager = {name: broker.workers(name) for name in names}
    if as_json:
        echo_json(by_manager)
    else:
        for names_ in by_manager.values():
            for name in names_:
                click.echo(name)


@click.command(short_help="List queued, delayed and held job ids.")
@backend_options
@json_option
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="List this many jobs.",
)
@click.option(
    "--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Skip this many jobs first."
)
@click.option("--all", "everything", is_flag=True, help="List every job (read and printed page by page).")
@click.option("--queue", metavar="NAME", help="List only the named queue NAME ('default': the shared queue).")
@click.argument("manager", required=False)
@click.pass_context
def jobs(
    ctx: click.Context,
    *,
    backend: str,
    url: str | None,
    as_json: bool,
    limit: int,
    offset: int,
    everything: bool,
    queue: str | None,
    manager: str | None,
) -> None:
    """List the ids of jobs waiting, delayed or held (for MANAGER, a --queue, or everywhere).

    Without MANAGER: the shared queue (next to run first), the delayed jobs due for it
    (soonest first), the same for each named queue, then for every manager its queue, its
    delayed jobs and what each of its workers holds. With MANAGER: its own queue and
    delayed jobs, and what its workers hold. With --queue: that queue and its delayed
    jobs. Failed jobs are listed by ``qw failed``.

    A queue may hold millions of jobs: 100 are listed (--limit N), after skipping
    --offset N; --all lists every one. When not all are shown, stderr says how many
    there are. --json prints a list of {"id", "state", "queue", "manager", "worker"} objects;
    state is queued, delayed or held. Listings are read and printed page by page (no
    read holds Redis up, and memory stays small), each page as the queues are then: a
    job that moves meanwhile may be missed or listed twice.
    """
    if everything and ctx.get_parameter_source("limit") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("give --limit or --all, not both")
    if queue is not None and manager is not None:
        raise click.UsageError("give MANAGER or --queue, not both")
    with opened_broker(backend, url) as broker:
        sources = (
            _waiting(broker, None, _named(broker, queue)) if queue is not None else _sources(broker, manager)
        )
        parts = _plan(sources, offset, None if everything else limit)
        pages = _Counted(_pages(broker, parts))
        if as_json:
            echo_json_array(_records(page) for page in pages)
        else:
            headers = ["state", "queue", "manager", "worker", "job"]
            widths = column_widths(headers, [part.source.row("") for part in parts])
            click.echo(format_row([h.upper() for h in headers], widths))
            for page in pages:
                click.echo("\n".join(format_row(source.row(job_id), widths) for source, job_id in page))
    total = sum(source.count for source in sources)
    if pages.count < total:
        click.echo(_footer(pages.count, total, offset), err=True)


@attrs.frozen
class _Source:
    """One listing ``qw jobs`` shows: a queue, the jobs delayed for it, or a held list."""

    state: str
    manager: str | None
    worker: str | None
    count: int
    queue: str | None = None  # a named queue's

    def row(self, job_id: str) -> list[Cell]:
        return [self.state, self.queue, self.manager, self.worker, job_id]

    def read(self, broker: Inspector, offset: int, limit: int) -> list[str]:
        if self.state == "queued":
            return broker.queued_job_ids(self.manager, queue=self.queue, offset=offset, limit=limit)
        if self.state == "delayed":
            return broker.delayed_job_ids(self.manager, queue=self.queue, offset=offset, limit=limit)
        assert self.worker is not None
        return broker.held_job_ids(self.worker, offset=offset, limit=limit)


@attrs.frozen
class _Part:
    """The ``take`` ids of ``source`` from position ``start`` on."""

    source: _Source
    start: int
    take: int


#: Ids as ``qw jobs`` reads them, each with the listing it came from.
_Page = list[tuple[_Source, str]]


def _sources(broker: Inspector, manager: str | None) -> list[_Source]:
    """Every listing ``qw jobs`` shows, in order, with how many ids each holds: counts are
    cheap (Redis: ``LLEN``), so a page deep into the listing is found without reading the
    listings before it."""
    found: list[_Source] = []
    if manager is None:
        names = broker.managers()
        found += _waiting(broker, None)
        for queue in broker.named_queues():
            found += _waiting(broker, None, queue)
    else:
        names = [broker.check_name(manager)]
    for name in names:
        found += _waiting(broker, name)
        found += [_Source("held", name, w, broker.held_count(w)) for w in broker.workers(name)]
    return found


def _waiting(broker: Inspector, manager: str | None, queue: str | None = None) -> list[_Source]:
    """The jobs queued for ``manager`` (or named queue ``queue``, or everybody), next first,
    then those delayed, soonest first."""
    return [
        _Source("queued", manager, None, broker.queued_count(manager, queue=queue), queue),
        _Source("delayed", manager, None, broker.delayed_count(manager, queue=queue), queue),
    ]


def _named(broker: Inspector, queue: str) -> str | None:
    """``--queue NAME`` as a listing's queue: ``None`` for the shared queue, else the name, checked."""
    from qw_core.models import DEFAULT_QUEUE

    return None if queue == DEFAULT_QUEUE else broker.check_name(queue)


def _plan(sources: list[_Source], offset: int, limit: int | None) -> list[_Part]:
    """Which ids of which sources to list: skip whole sources by their counts until
    ``offset`` is used up, then take up to ``limit`` ids (``None``: all)."""
    parts = []
    for source in sources:
        if limit is not None and limit <= 0:
            break
        if source.count <= offset:
            offset -= source.count
            continue
        take = source.count - offset if limit is None else min(source.count - offset, limit)
        parts.append(_Part(source, offset, take))
        offset = 0
        if limit is not None:
            limit -= take
    return parts


def _pages(broker: Inspector, parts: list[_Part]) -> Iterator[_Page]:
    """The ids of ``parts``, at most :data:`PAGE` a call and a page. A listing that
    shrank meanwhile ends early; one that grew is not followed past its count."""
    for part in parts:
        position, left = part.start, part.take
        while left > 0:
            want = min(PAGE, left)
            ids = part.source.read(broker, position, want)
            if ids:
                yield [(part.source, job_id) for job_id in ids]
            if len(ids) < want:
                break
            position += want
            left -= want


def _records(page: _Page) -> list[dict[str, str | None]]:
    return [
        {"id": job_id, "state": s.state, "queue": s.queue, "manager": s.manager, "worker": s.worker}
        for s, job_id in page
    ]


class _Counted:
    """Pages of ids, counting the ids that went by."""

    def __init__(self, pages: Iterable[_Page]) -> None:
        self._pages = pages
        self.count = 0

    def __iter__(self) -> Iterator[_Page]:
        for page in self._pages:
            self.count += len(page)
            yield page


def _footer(shown: int, total: int, offset: int) -> str:
    """What stderr says when ``qw jobs`` did not list every job, in the style of ``qw failed``."""
    if offset >= total:
        return f"(none of {total:,} shown: --offset {offset:,} is past the end)"
    which = f"{shown:,}" if not offset or not shown else f"jobs {offset + 1:,} to {offset + shown:,}"
    return f"({which} of {total:,} shown; --limit/--offset or --all for more)"
