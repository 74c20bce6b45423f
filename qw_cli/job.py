"""``qw job ID``: where one job is now (queued, delayed, held, failed, succeeded)."""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any

import click

from qw_cli.options import backend_options, json_option, opened_broker
from qw_cli.output import echo_json

if TYPE_CHECKING:
    from qw_core.models import JobState


@click.command(short_help="Show where a job is: queued, delayed, held, failed or done.")
@backend_options
@json_option
@click.argument("job_id", metavar="ID")
def job(*, backend: str, url: str | None, as_json: bool, job_id: str) -> None:
    """Show where job ID is now: queued (on which queue), delayed (until when), held by a
    worker (running, or about to), failed (with the error), succeeded (when, and what it
    returned, kept for qw run --result-ttl), or unknown (finished and forgotten since, or
    never queued). ID may be the start of one (as with git's hashes).

    --json prints {"id", "state", "queue", "worker", "due_at", "since", "finished_at",
    "data", "error", "result"}; since: when a held job began to run, as its manager's last
    heartbeat (every few seconds) said.
    """
    from qw_cli.failed import unique_start

    with opened_broker(backend, url) as broker:
        found = broker.job_status(job_id)
        if found.state.value == "unknown":  # the start of an id, perhaps
            full = unique_start(broker, job_id, failed=False)
            if full != job_id:
                found = broker.job_status(full)
    record = _record(found)
    if as_json:
        echo_json(record)
        return
    for key in ("id", "state", "queue", "worker"):
        if record[key] is not None:
            click.echo(f"{key + ':':<8} {record[key]}")
    for key in ("since", "due_at", "finished_at"):
        if record[key] is not None:
            at = datetime.datetime.fromtimestamp(record[key]).astimezone().isoformat(timespec="seconds")
            click.echo(f"{key.removesuffix('_at') + ':':<8} {at}")
    if record["error"] is not None:
        click.echo(f"{'error:':<8} {record['error']}")
    if found.result is not None:
        click.echo(f"{'result:':<8} {json.dumps(record['result'], ensure_ascii=False)}")
    if found.job is not None:
        click.echo(f"{'data:':<8} {json.dumps(record['data'], ensure_ascii=False)}")


def _record(found: JobState) -> dict[str, Any]:
    failure = found.failure
    return {
        "id": found.job_id,
        "state": found.state.value,
        "queue": found.queue,
        "worker": found.worker,
        "due_at": found.due_at,
        "since": found.since,
        "finished_at": found.finished_at,
        "data": None if found.job is None else found.job.data,
        "error": None if failure is None else f"{failure.exc_type}: {failure.message}",
        "result": None if found.result is None else found.result.value,
    }
