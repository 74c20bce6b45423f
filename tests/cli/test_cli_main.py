"""The ``qw`` group: version, help on every command, completion, central error handling, start-up cost."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import click
import pytest
from cli_support import DEAD_URL, REDIS_URL, assert_one_line_error, invoke

from qw_cli.main import SHORT_HELP, main
from qw_core import __version__
from qw_core.models import Failure, Job

COMMANDS = sorted(main.list_commands(click.Context(main)))


def test_every_command_is_there() -> None:
    assert COMMANDS == [
        "backends",
        "dashboard",
        "enqueue",
        "failed",
        "job",
        "jobs",
        "managers",
        "migrate",
        "move",
        "plugins",
        "result",
        "run",
        "schedules",
        "status",
        "workers",
    ]
    context = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(context, name)
        assert command is not None
        assert command.name == name
    assert main.get_command(context, "nope") is None


def test_version() -> None:
    for flag in ("--version", "-V"):
        result = invoke(flag)
        assert result.exit_code == 0
        assert result.stdout == f"qw {__version__}\n"


def test_group_help_mentions_environment_and_completion() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for text in ("QW_BACKEND", "QW_PLUGINS", "_QW_COMPLETE=bash_source qw", *COMMANDS):
        assert text in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_on_every_command(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"Usage: qw {command} [OPTIONS]")


def test_run_help_shows_flags_defaults_and_env_vars() -> None:
    text = invoke("run", "--help").stdout
    for needle in (
        "--backend NAME",
        "default: redis",
        "-w, --workers",
        "QW_WORKERS",
        "-n, --name",
        "QW_NAME",
        "-l, --level [debug|info|warn|warning|error]",
        "QW_LEVEL",
        "-p, --plugin MODULE",
        "--prefetch",
        "--grace SECONDS",
        "--embedded",
        "--sample-jobs N",
    ):
        assert needle in text, needle


def test_shell_completion() -> None:
    source = invoke(env={"_QW_COMPLETE": "bash_source"})
    assert source.exit_code == 0
    assert "_qw_completion" in source.stdout
    words = invoke(env={"_QW_COMPLETE": "bash_complete", "COMP_WORDS": "qw st", "COMP_CWORD": "1"})
    assert "status" in words.stdout


def test_unexpected_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import qw_cli.options

    def boom(name: str, url: str | None) -> None:
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(qw_cli.options, "open_broker", boom)
    monkeypatch.delenv("QW_DEBUG", raising=False)
    assert_one_line_error(
        invoke("managers"), "unexpected RuntimeError: boom with a second line", "QW_DEBUG=1"
    )


def test_startup_imports_no_command_and_no_backend_driver() -> None:
    # qw --version (and every verb's start) pays for click and qw_cli.main only; each
    # command's module, pluggy and attrs come when a command needs them (bench/startup.py).
    heavy = (
        "redis",
        "fakeredis",
        "lupa",
        "qw_redis",
        "qw_core.manager",
        "multiprocessing.connection",
        "qw_cli.run",
        "qw_cli.enqueue",
        "qw_cli.inspect",
        "pluggy",
        "attrs",
        "importlib.metadata",
    )
    code = f"import sys, qw_cli.main; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_help_lists_every_command_without_importing_one() -> None:
    # qw --help lists the commands from a table, so it imports none of their modules (qw
    # run's would bring the worker, asyncio and pluggy); the table says what each says.
    heavy = ("qw_cli.run", "qw_core.worker", "qw_core.execution", "qw_cli.inspect", "pluggy", "asyncio")
    code = (
        "import sys\nfrom qw_cli.main import main\n"
        "try:\n    main(['--help'], prog_name='qw')\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    listed, _, imported = done.stdout.rpartition("\n[")
    assert "[" + imported.strip() == "[]"
    for name in COMMANDS:
        command = main.get_command(click.Context(main), name)
        assert command is not None
        assert SHORT_HELP[name] == command.get_short_help_str(limit=200), name
        assert re.search(rf"^  {name} +{re.escape(SHORT_HELP[name])}$", listed, re.MULTILINE), listed


@pytest.mark.redis
def test_a_huge_id_is_not_echoed_whole(redis_db: object) -> None:
    huge = "x" * 10240
    for args in (["failed", "show", huge], ["failed", "requeue", huge], ["failed", "purge", huge]):
        result = invoke(*args, "--url", REDIS_URL)
        assert result.exit_code == 1, args
        line = result.stderr.splitlines()[-1]  # after 'requeued 0 jobs', say
        assert line.startswith("qw: error: no failed job 'xxx"), line
        assert re.search(r"x\.\.\.\[1024\d characters\]", line), line
        assert len(line) < 400, args


@pytest.mark.redis
def test_an_empty_id_names_no_job(broker: Any, redis_db: Any) -> None:
    """An empty id is the start of every id: ``qw failed purge "$ID"`` with ``ID`` unset
    deleted the only failed job, and ``qw job ''`` or ``qw result ''`` showed another's."""
    job = Job.new({"n": 1})
    broker.queue_job(job)
    [taken] = broker.take(manager="m", worker="m.1")
    broker.fail_job(worker="m.1", job=taken, failure=Failure(exc_type="ValueError", message="no"))
    for args in (["failed", "purge"], ["failed", "requeue"], ["failed", "show"], ["job"], ["result"]):
        assert_one_line_error(invoke(*args, "", "--url", REDIS_URL), "an empty ID names no job")
    assert broker.get_failed(job.id) is not None


def test_a_delay_of_more_than_a_hundred_years_is_refused() -> None:
    for delay in ("99999999999999999999d", "101y", "36501d", "9" * 400):
        result = invoke("enqueue", "--url", DEAD_URL, "--delay", delay, "{}")
        assert result.exit_code == 2, delay
        assert "Traceback" not in result.stderr
        assert len(result.stderr) < 600, "a long value is not echoed whole"
    assert (
        "is longer than 100 years" in invoke("enqueue", "--url", DEAD_URL, "--delay", "36501d", "{}").stderr
    )
