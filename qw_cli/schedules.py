"""Periodic jobs from the command line: ``qw run --schedule`` / ``--schedules FILE``, and
``qw schedules``, which lists what the running managers declare.

A schedules file is JSON (a list of objects, each as :class:`~qw_core.schedules.Schedule`
takes it): JSON rather than TOML because job data is JSON already, and because it reads
the same on every Python qw runs on with no extra dependency (TOML's reader is in the
standard library only from 3.11).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

from qw_cli.errors import shortened
from qw_cli.options import backend_options, json_option, opened_broker
from qw_cli.output import Cell, echo_json, echo_table
from qw_core.errors import ConfigurationError

if TYPE_CHECKING:
    from qw_core.models import ScheduleInfo
    from qw_core.schedules import Schedule


def parse_schedule(text: str) -> Schedule:
    """``CRON`` or ``CRON=JSON`` (the job data) as a schedule (``qw run --schedule``).

    :raises ConfigurationError: not a cron expression, or the data is not JSON (one line).
    """
    from qw_core.schedules import Schedule

    cron, equals, data_text = text.partition("=")
    data: Any = {}
    if equals:
        try:
            data = json.loads(data_text)
        except ValueError as exc:
            raise ConfigurationError(
                f"--schedule {shortened(text)!r}: the data after '=' is not JSON ({exc})"
            ) from None
    try:
        return Schedule(cron.strip(), data=data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"--schedule {shortened(text)!r}: {exc}") from None


def load_schedules(path: str) -> list[Schedule]:
    """The schedules of a JSON file: a list of objects, each with ``cron`` and optionally
    ``id``, ``data``, ``queue``, ``timezone``, ``missed``, ``catch_up``, ``meta``.

    :raises ConfigurationError: the file cannot be read, is not JSON, or an entry is bad
        (the message names the file and the entry).
    """
    from qw_core.schedules import schedule_from_dict

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the schedules file {path}: {exc}") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"the schedules file {path} is not JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ConfigurationError(
            f"the schedules file {path} must hold a JSON list of schedules, not a {type(raw).__name__}"
        )
    return [schedule_from_dict(entry, f"{path}: entry {n}") for n, entry in enumerate(raw, start=1)]


def _when(tick: float | None, zone: str) -> str | None:
    if tick is None:
        return None
    moment = datetime.datetime.fromtimestamp(tick, datetime.timezone.utc)
    try:
        from zoneinfo import ZoneInfo

        moment = moment.astimezone(ZoneInfo(zone))
    except (ValueError, KeyError):  # a zone this host lacks: UTC
        pass
    return moment.isoformat(timespec="seconds")


def _row(found: ScheduleInfo) -> list[Cell]:
    return [
        found.id + (" (conflict)" if found.conflict else ""),
        found.cron,
        found.timezone,
        found.queue or "default",
        _when(found.next_run, found.timezone),
        _when(found.last_run, found.timezone),
        found.last_manager,
    ]


@click.command(short_help="List the schedules of the running managers.")
@backend_options
@json_option
def schedules(*, backend: str, url: str | None, as_json: bool) -> None:
    """List the periodic jobs the running managers declare: each schedule's id, cron
    expression, time zone and queue, its next run, its last run and the manager that
    enqueued it. Times are in the schedule's zone.

    A schedule that running managers declare in different ways (during a rolling deploy,
    say) is listed once per way, marked "(conflict)": each manager enqueues the ticks of
    its own. A schedule no running manager declares is not listed. --json prints the
    records with times in seconds since the epoch.
    """
    with opened_broker(backend, url) as broker:
        found = broker.schedules()
    if as_json:
        echo_json([{**attrs.asdict(entry), "declared_by": list(entry.declared_by)} for entry in found])
        return
    if not found:
        click.echo("no schedules: no running manager declares one")
        return
    echo_table(
        ["id", "cron", "zone", "queue", "next run", "last run", "by"], [_row(entry) for entry in found]
    )
