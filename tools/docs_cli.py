"""The CLI reference of the documentation, written from the click commands themselves.

A MkDocs hook (``hooks:`` in mkdocs.yml): on a page that holds the line
``<!-- qw-cli-reference -->``, that line becomes a section per command and subcommand of
``qw``, in the order ``qw --help`` lists them, each with its help text, usage line and a
table of its options as ``--help`` prints them (environment variable and default
included). Nothing is written by hand, so the reference cannot drift from the commands;
``tests/test_docs_examples.py`` checks that every option of every command is in it.

(mkdocs-click does the same job, but lists subcommands alphabetically and, with click
8.3, shows an internal sentinel as the default of every option that has none.)
"""

from __future__ import annotations

import html
import inspect
from collections.abc import Iterator
from typing import Any

import click

from qw_cli.main import main

#: The line a page puts where the reference goes.
MARKER = "<!-- qw-cli-reference -->"


def cli_reference() -> str:
    """The reference of every ``qw`` command, as Markdown."""
    return "\n".join(_sections(main, click.Context(main, info_name="qw"), level=2))


def commands() -> Iterator[tuple[str, click.Command, click.Context]]:
    """Every command of ``qw`` (``qw`` itself first), with its full name and a context."""
    yield from _walk(main, click.Context(main, info_name="qw"))


def _walk(command: click.Command, ctx: click.Context) -> Iterator[tuple[str, click.Command, click.Context]]:
    yield ctx.command_path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx))


def _sections(command: click.Command, ctx: click.Context, *, level: int) -> Iterator[str]:
    for path, cmd, sub_ctx in _walk(command, ctx):
        depth = level + (1 if path.count(" ") >= 2 else 0)
        yield f"{'#' * depth} `{path}` {{ #{path.replace(' ', '-')} }}\n"
        yield _help_markdown(cmd.help or "")
        yield f"```text\n{cmd.get_usage(sub_ctx)}\n```\n"
        rows = [_option_row(param, sub_ctx) for param in cmd.get_params(sub_ctx)]
        rows = [row for row in rows if row is not None]
        if rows:
            yield "| option | what it does |\n| --- | --- |"
            yield "\n".join(rows) + "\n"
        if isinstance(cmd, click.Group):
            names = cmd.list_commands(sub_ctx)
            yield "Commands: " + ", ".join(
                f"[`{path} {name}`](#{path.replace(' ', '-')}-{name})" for name in names
            )
            yield ""


def _option_row(param: click.Parameter, ctx: click.Context) -> str | None:
    record = param.get_help_record(ctx)
    if record is None:
        return None
    flags, text = record
    # HTML, not backticks: a code span would show the backslash of an escaped "|".
    code = html.escape(" ".join(flags.split())).replace("|", "&#124;")
    return f"| <code>{code}</code> | {_cell(text)} |"


def _cell(text: str) -> str:
    """Text for a table cell: one line, its "|" escaped, and its brackets too (click's
    ``[default: 5s][env var: QW_X]`` would read as a Markdown reference link)."""
    text = " ".join(text.split())
    return text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")


def _help_markdown(text: str) -> str:
    """A click help text as Markdown: its ``\\b`` paragraphs (kept as written) become
    text blocks, the others flowing paragraphs."""
    out: list[str] = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if paragraph.startswith("\b"):
            out.append("```text\n" + paragraph.removeprefix("\b").strip("\n") + "\n```")
        else:
            out.append(" ".join(paragraph.split()))
    return "\n\n".join(out) + "\n"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: put the reference where a page asks for it."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())
