"""``qw status``, ``qw managers``, ``qw workers`` and ``qw jobs``: what is running and waiting.

They only read, through the broker's query methods, so they work against any backend and
never disturb a running manager. Each has ``--json`` for scripts; the text forms are one
name per line (``managers``, ``workers``) or an aligned table (``status``, ``jobs``).

Where a job is: *queued* on the shared queue or on one manager's queue, or *held* by a
worker (taken and not finished, or queued straight onto that worker).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from qw_cli.options import backend_options, json_option, opened_broker
from qw_cli.output import Cell, echo_json, echo_table

if TYPE_CHECKING:
    from qw_core.broker import Broker

#: How the shared queue is named in output (``all:jobs`` in Redis).
SHARED = "shared"


@click.command(short_help="Show managers, workers, and job counts.")
@backend_options
@json_option
def status(*, backend: str, url: str | None, as_json: bool) -> None:
    """Show managers, their workers, and how many jobs wait, are delayed, held or failed.

    One row for the shared queue, one per manager (jobs on its own queue, delayed for it,
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


def _status(broker: Broker) -> dict[str, Any]:
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
@click.argument("manager", required=False)
def jobs(*, backend: str, url: str | None, as_json: bool, manager: str | None) -> None:
    """List the ids of jobs waiting, delayed or held (for MANAGER, or everywhere).

    Without MANAGER: the shared queue, every manager's queue, the delayed jobs due for
    each, and what every worker holds. With MANAGER: its own queue and delayed jobs, and
    what its workers hold. Failed jobs are listed by ``qw failed``. --json prints a list
    of {"id", "state", "manager", "worker"} objects; state is queued, delayed or held.
    """
    with opened_broker(backend, url) as broker:
        records = _job_records(broker, manager)
    if as_json:
        echo_json(records)
    else:
        echo_table(
            ["state", "manager", "worker", "job"],
            [[r["state"], r["manager"], r["worker"], r["id"]] for r in records],
        )


def _job_records(broker: Broker, manager: str | None) -> list[dict[str, str | None]]:
    records: list[dict[str, str | None]] = []
    if manager is None:
        records += _waiting(broker, None)
        names = broker.managers()
    else:
        names = [broker.check_name(manager)]
    for name in names:
        records += _waiting(broker, name)
        for worker in broker.workers(name):
            records += [_record(job_id, "held", name, worker) for job_id in broker.held_job_ids(worker)]
    return records


def _waiting(broker: Broker, manager: str | None) -> list[dict[str, str | None]]:
    """The jobs queued for ``manager`` (or everybody), next first, then those delayed, soonest first."""
    return [_record(job_id, "queued", manager, None) for job_id in broker.queued_job_ids(manager)] + [
        _record(job_id, "delayed", manager, None) for job_id in broker.delayed_job_ids(manager)
    ]


def _record(job_id: str, state: str, manager: str | None, worker: str | None) -> dict[str, str | None]:
    return {"id": job_id, "state": state, "manager": manager, "worker": worker}
