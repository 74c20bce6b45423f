"""The ``qw`` command group: version, completion, and central error handling.

Commands raise qw's own errors (:class:`~qw_core.errors.QwError`) freely; :class:`QwGroup`
turns each into one ``qw: error: ...`` line and exit code 1 in a single place, so no
command carries its own try/except and no user ever sees a traceback for a refusal.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

import click

from qw_cli.discover import backends, plugins
from qw_cli.enqueue import enqueue
from qw_cli.errors import translate
from qw_cli.failed import failed
from qw_cli.inspect import jobs, managers, status, workers
from qw_cli.run import run
from qw_core import __version__

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
        """Commands in the order they were added (the order a user needs them), not sorted."""
        return list(self.commands)

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


for command in (run, enqueue, status, managers, workers, jobs, failed, backends, plugins):
    main.add_command(command)
