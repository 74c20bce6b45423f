"""Printing results: aligned text tables for people, JSON for programs.

Tables are plain text (two spaces between columns, an upper-case header row, ``-`` for
a missing value) so they read well in a terminal and still ``grep``/``awk`` cleanly.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO, TypeVar

import click

Cell = str | int | float | None
F = TypeVar("F", bound=Callable[..., Any])


def echo_json(value: object) -> None:
    """Print ``value`` as indented JSON on stdout."""
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def echo_json_array(pages: Iterable[Iterable[object]]) -> None:
    """Print the items of ``pages`` as one JSON array on stdout, exactly as :func:`echo_json`
    prints a list, one page at a time: a listing of millions of items is never held whole,
    in memory or in one string."""
    first = True
    for page in pages:
        text = ",\n  ".join(map(_item_json, page))
        if text:
            click.echo(("[\n  " if first else ",\n  ") + text, nl=False)
            first = False
    click.echo("[]" if first else "\n]")


#: JSON text of a string, as ``json.dumps`` writes it (its C encoder, where there is one).
_string_json = json.encoder.encode_basestring_ascii


def _item_json(item: object) -> str:
    """``item`` as :func:`echo_json` indents an item of a list (at the second level).

    A flat object of strings and nulls (a ``qw jobs`` record) is written here directly:
    with an indent, ``json.dumps`` runs its pure-Python encoder, which would take most of
    the time of a listing of millions.
    """
    if type(item) is dict and all(type(k) is str and (v is None or type(v) is str) for k, v in item.items()):
        if not item:
            return "{}"
        fields = (f"{_string_json(k)}: {'null' if v is None else _string_json(v)}" for k, v in item.items())
        return "{\n    " + ",\n    ".join(fields) + "\n  }"
    return json.dumps(item, indent=2).replace("\n", "\n  ")


def _cells(row: Sequence[Cell]) -> list[str]:
    return ["-" if c is None else str(c) for c in row]


def column_widths(headers: Sequence[str], rows: Iterable[Sequence[Cell]]) -> list[int]:
    """The width of each column of a table of ``headers`` and ``rows``."""
    widths = [len(str(h)) for h in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, _cells(row), strict=True)]
    return widths


def format_row(row: Sequence[Cell], widths: Sequence[int]) -> str:
    """One line of an aligned table whose columns are ``widths`` wide; the last column is
    not padded, and trailing blanks are dropped."""
    cells = _cells(row)
    if len(cells) == 1:
        return cells[0]
    padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths[:-1], strict=True)]
    return ("  ".join(padded) + "  " + cells[-1]).rstrip()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[str]:
    """Lines of an aligned table; the last column is not padded."""
    widths = column_widths(headers, rows)
    return [format_row([str(h).upper() for h in headers], widths), *(format_row(row, widths) for row in rows)]


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
    """Print an aligned table on stdout."""
    for line in format_table(headers, rows):
        click.echo(line)


#: Seconds between two updates of a :class:`Progress` line.
PROGRESS_EVERY = 0.1
#: Characters in a :class:`Progress` bar.
BAR_WIDTH = 24


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (a person reads it as it is written)."""
    return stream.isatty()


def quiet_option(func: F) -> F:
    """``-q/--quiet``: no progress bar and no closing count on stderr (ids and errors are
    still printed)."""
    return click.option(
        "-q", "--quiet", is_flag=True, help="Show no progress bar and no closing count on stderr."
    )(func)


def progress_bar(what: str, done: int, total: int) -> str:
    """The text of a progress line: ``requeued [######------] 2,000 of 4,000 (50%)``."""
    done = max(0, min(done, total))
    filled = done * BAR_WIDTH // total if total else BAR_WIDTH
    percent = done * 100 // total if total else 100
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    return f"{what} [{bar}] {done:,} of {total:,} ({percent}%)"


class Progress:
    """How far a long command has got, as a bar on stderr rewritten in place.

    Only on a terminal and unless ``quiet``: where stderr is a file or a pipe, nothing is
    written (the command's final line says what was done). Before anything else is printed
    to the terminal, :meth:`clear` takes the bar away, so output on stdout does not run
    into it.
    """

    def __init__(self, what: str, total: int, *, quiet: bool = False) -> None:
        self._what = what
        self._total = total
        self._stream = sys.stderr if not quiet and is_terminal(sys.stderr) else None
        self._shown_at: float | None = None  # when the line was last written, if it is up

    def show(self, done: int) -> None:
        """Say that ``done`` of the total are done (at most every :data:`PROGRESS_EVERY` seconds)."""
        now = time.monotonic()
        if self._stream is None or (self._shown_at is not None and now - self._shown_at < PROGRESS_EVERY):
            return
        self._stream.write(f"\r{progress_bar(self._what, done, self._total)}\x1b[K")
        self._stream.flush()
        self._shown_at = now

    def clear(self) -> None:
        """Take the line away, if it is up."""
        if self._stream is not None and self._shown_at is not None:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown_at = None
