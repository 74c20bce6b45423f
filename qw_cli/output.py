"""Printing results: aligned text tables for people, JSON for programs.

Tables are plain text (two spaces between columns, an upper-case header row, ``-`` for
a missing value) so they read well in a terminal and still ``grep``/``awk`` cleanly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

Cell = str | int | float | None


def echo_json(value: object) -> None:
    """Print ``value`` as indented JSON on stdout."""
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[str]:
    """Lines of an aligned table; the last column is not padded."""
    text = [[str(h).upper() for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(line[i]) for line in text) for i in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths[:-1], strict=True))
        + "  "
        + line[-1]
        if len(line) > 1
        else line[0]
        for line in text
    ]


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
    """Print an aligned table on stdout."""
    for line in format_table(headers, rows):
        click.echo(line.rstrip())
