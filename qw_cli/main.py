"""The ``qw`` command group: version, completion, and central error handling.

Commands raise qw's own errors (:class:`~qw_core.errors.QwError`) freely; :class:`QwGroup`
turns each into one ``qw: error: ...`` line and exit code 1 in a single place, so no
command carries its own try/except and no user ever sees a traceback for a refusal.

Each command's module is imported only when that command runs (:data:`COMMANDS`): ``qw
enqueue`` does not pay for the manager, pluggy or the plugin discovery that ``qw run``
needs, and ``qw --version`` for none of them.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import Any

import click

from qw_cli.errors import translate
from qw_core import __version__

#: Each command, in the order a user needs them, and where it is defined.
COMMANDS = {
    "run": "qw_cli.run:run",
    "enqueue": "qw_cli.enqueue:enqueue",
    "status": "qw_cli.inspect:status",
    "managers": "qw_cli.inspect:managers",
    "workers": "qw_cli.inspect:workers",
    "jobs": "qw_cli.inspect:jobs",
    "move": "qw_cli.move:move",
    "failed": "qw_cli.failed:failed",
    "job": "qw_cli.job:job",
    "result": "qw_cli.result:result",
    "schedules": "qw_cli.schedules:schedules",
    "dashboard": "qw_cli.dashboard:dashboard",
    "migrate": "qw_cli.migrate:migrate",
    "backends": "qw_cli.discover:backends",
    "plugins": "qw_cli.discover:plugins",
}

#: Each command's ``short_help``, for ``qw --help`` to list without importing every
#: command's module (``qw run``'s brings the worker, asyncio and pluggy). A test checks
#: that each is the command's own.
SHORT_HELP = {
    "run": "Run a manager and its workers on TARGET.",
    "enqueue": "Queue jobs from JSON (argument, file or stdin).",
    "status": "Show managers, workers, and job counts.",
    "managers": "List running managers.",
    "workers": "List running workers.",
    "jobs": "List queued, delayed and held job ids.",
    "move": "Move the jobs waiting under NAME to another queue.",
    "failed": "List, show, requeue or purge failed jobs.",
    "job": "Show where a job is: queued, delayed, held, failed or done.",
    "result": "Show what a finished job returned.",
    "schedules": "List the schedules of the running managers.",
    "dashboard": "Serve the web dashboard.",
    "migrate": "Create or upgrade the backend's schema (PostgreSQL).",
    "backends": "List installed backends.",
    "plugins": "List the plugins qw run would load.",
}

EPILOG = """\b
Settings can also come from QW_BACKEND, QW_URL, QW_WORKERS, QW_NAME, QW_LEVEL
and QW_PLUGINS; flags win.
\b
Shell completion (bash; zsh_source/fish_source for zsh/fish):
  eval "$(_QW_COMPLETE=bash_source qw)"
"""


def importable_here() -> None:
    """Put the current directory first on the Python path, as ``python -m`` does, so that
    ``qw run myapp.jobs:handle`` finds ``myapp`` where the user stands (rq and celery do the
    same). Worker processes inherit the path."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)


class QwGroup(click.Group):
    """A click group that reports every failure of a command in one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Commands in the order a user needs them, not sorted."""
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, its module imported now (see :data:`COMMANDS`)."""
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, _, name = where.partition(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list of commands in ``--help``, from :data:`SHORT_HELP` (no module imported)."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, SHORT_HELP[name]) for name in COMMANDS])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `qw jobs | head`: click's main() quiets this
                raise
            raise translate(exc) from exc
        except Exception as exc:
            raise translate(exc) from exc


@click.group(cls=QwGroup, epilog=EPILOG, context_settings={"max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="qw", message="%(prog)s %(version)s")
@click.option("--backend", metavar="NAME", help="The backend, for every command (as QW_BACKEND).")
@click.option("--url", metavar="URL", help="Where its server is, for every command (as QW_URL).")
def main(backend: str | None, url: str | None) -> None:
    """qw: run job-queue workers and talk to their queues.

    Start with: qw run --embedded --sample-jobs 3 qw_core.examples:echo

    Targets and plugins (-p MODULE) are imported with the current directory first on
    the Python path, as with 'python -m': run qw from the folder that holds your package.
    """
    # Given here (qw --url URL status), they reach the command through its own --url and
    # --backend (see qw_cli.options.backend_options), which win if given too.
    importable_here()
    if any("://" in argument for argument in sys.argv):  # before any worker is forked
        from qw_cli.cmdline import hide_url_secrets

        hide_url_secrets()
