"""``qw move NAME``: hand the jobs of a stray queue to one that is served.

A job queued for a manager that never runs (a misspelt ``--manager``, queued with
``--force``) or sent to a worker that is gone waits for ever: ``qw status`` lists such
queues as *stray*, and this moves their jobs, in order, to the back of the shared queue or
of a running manager's. A running worker's list is refused: those jobs are its own.
"""

from __future__ import annotations

import click

from qw_cli.errors import CliError
from qw_cli.options import backend_options, opened_broker
from qw_core.naming import check_manager_name


@click.command(short_help="Move the jobs waiting under NAME to another queue.")
@backend_options
@click.argument("name")
@click.option(
    "--to", "to", metavar="MANAGER", help="Move them to this manager's queue.  [default: the shared queue]"
)
@click.option("--force", is_flag=True, help="Move to a --to manager that is not running.")
def move(*, backend: str, url: str | None, name: str, to: str | None, force: bool) -> None:
    """Move the jobs waiting under NAME (a manager's queue, or the list of a worker that is
    not running) to the back of the shared queue, or of manager --to's, in their order.

    For the stray queues 'qw status' lists: jobs for a manager or worker that is not
    running, which nothing takes until it runs.
    """
    with opened_broker(backend, url) as broker:
        if to is not None:
            check_manager_name(broker, to)
        if to is not None and not force and to not in broker.managers():
            raise CliError(
                f"manager {to!r} is not running, so its queue is not served; start it first, or --force"
            )
        moved = broker.move_queued(name, to=to)
    where = "the shared queue" if to is None else f"manager {to}'s queue"
    click.echo(f"moved {moved} job{'' if moved == 1 else 's'} from {name} to {where}", err=True)
