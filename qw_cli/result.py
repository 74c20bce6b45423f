"""``qw result ID``: what a finished job returned, waiting for it if asked to."""

from __future__ import annotations

import json

import click

from qw_cli.errors import CliError
from qw_cli.options import DURATION, backend_options, json_option, opened_broker
from qw_cli.output import echo_json


@click.command(short_help="Show what a finished job returned.")
@backend_options
@json_option
@click.option(
    "--wait",
    type=DURATION,
    default="0",
    metavar="DURATION",
    help="Wait up to this long for the job to finish (30, 30s, 5m).  [default: do not wait]",
)
@click.argument("job_id", metavar="ID")
def result(*, backend: str, url: str | None, as_json: bool, wait: float, job_id: str) -> None:
    """Print what job ID's target returned, as JSON, while the broker keeps it (qw run
    --result-ttl, 10 minutes by default). ID may be the start of one.

    A job that is not finished yet, returned nothing (None), failed (see 'qw failed show
    ID'), or whose result expired has none: that is an error (exit 1). --json prints
    {"id", "value", "finished_at", "worker"}.
    """
    from qw_cli.failed import resolve_id

    with opened_broker(backend, url) as broker:
        job_id = resolve_id(broker, job_id, failed=False)
        found = broker.wait_result(job_id, wait) if wait > 0 else broker.get_result(job_id)
    if found is None:
        waited = f" after waiting {wait:g}s" if wait > 0 else " (--wait DURATION waits for it)"
        raise CliError(
            f"no result for job {job_id!r}{waited}: it is not finished, returned nothing, "
            "failed ('qw failed show ID'), or its result expired"
        )
    if as_json:
        echo_json(
            {
                "id": found.job_id,
                "value": found.value,
                "finished_at": found.finished_at,
                "worker": found.worker,
            }
        )
    else:
        click.echo(json.dumps(found.value, ensure_ascii=False))
