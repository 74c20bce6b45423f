"""``qw-manager`` and ``qw-client``: the original usage text, grammar and output, on real Redis."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest
from cli_support import (
    REDIS_DB,
    Process,
    assert_one_line_error,
    run_script,
    script,
    wait_for,
    wait_for_records,
)
from qwtest_redis import REDIS_HOST, shared_port

from qw_cli.argv import Option, UsageError, parse
from qw_cli.legacy import CLIENT_DOC, MANAGER_DOC, REDIS_OPTIONS
from qw_core import __version__
from qw_core.models import Job

REDIS_ARGS = ("-h", REDIS_HOST, f"--port={shared_port()}", "-d", str(REDIS_DB))
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

ORIGINAL_MANAGER_USAGE = (
    "qw-manager [--level=<log-level>] [--workers=<num-workers>] [--name=<name>] "
    "[--host=<host>] [--port=<port>] [--db=<db>] <target>"
)


# -- the docopt grammar, in-process --------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "options", "words"),
    [
        (["managers"], {}, ["managers"]),
        (["-h", "redis.local", "managers"], {"host": "redis.local"}, ["managers"]),
        (
            ["-hredis.local", "-p6380", "-d3", "jobs"],
            {"host": "redis.local", "port": "6380", "db": "3"},
            ["jobs"],
        ),
        (["jobs", "--host=h", "m1", "--db", "2"], {"host": "h", "db": "2"}, ["jobs", "m1"]),
        (["--ho", "h", "--po=1", "managers"], {"host": "h", "port": "1"}, ["managers"]),
        (["queue", "file", "-", "--", "-d"], {}, ["queue", "file", "-", "-d"]),
        (["managers", "--help"], {"help": True}, ["managers"]),
    ],
)
def test_grammar(argv: list[str], options: dict[str, str], words: list[str]) -> None:
    parsed = parse(argv, REDIS_OPTIONS)
    assert parsed.options == options
    assert parsed.words == words


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nope"], "--nope is not an option"),
        (["-x"], "-x is not an option"),
        (["--h", "x"], "--h is ambiguous: --help, --host"),
        (["--host"], "--host requires a value"),
        (["-d"], "-d requires a value"),
        (["-h", "a", "--host", "b"], "--host is given twice"),
        (["--help=yes"], "--help takes no value"),
    ],
)
def test_grammar_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse(argv, REDIS_OPTIONS)


def test_flags_may_stack() -> None:
    options = (Option("--all", "-a"), Option("--verbose", "-v"), Option("--out", "-o", takes_value=True))
    assert parse(["-avofile"], options).options == {"all": True, "verbose": True, "out": "file"}


# -- help, version, usage errors (real processes) -------------------------------------------


def test_manager_help_is_the_original_text() -> None:
    done = run_script("qw-manager", "--help")
    assert done.returncode == 0
    assert done.stdout == MANAGER_DOC + "\n"
    assert f"  {ORIGINAL_MANAGER_USAGE}\n" in done.stdout
    assert "  -h --host=<host>             Set the redis host to use [default: localhost]\n" in done.stdout
    assert (
        "  -w --workers=<num-workers>   Set the number of workers to start, defaults to number of cpus\n"
        in done.stdout
    )


def test_client_help_is_the_original_text() -> None:
    done = run_script("qw-client", "workers", "--help")  # --help wins wherever it is, as in docopt
    assert done.returncode == 0
    assert done.stdout == CLIENT_DOC + "\n"
    for usage in (
        "qw-client [--host=<host>] [--port=<port>] [--db=<db>] managers",
        "qw-client [--host=<host>] [--port=<port>] [--db=<db>] queue file <file> [<manager>]",
        "qw-client (--help | --version)",
    ):
        assert f"  {usage}\n" in done.stdout


def test_versions() -> None:
    assert run_script("qw-manager", "--version").stdout == f"qw-manager {__version__}\n"
    assert run_script("qw-client", "--version").stdout == f"qw-client {__version__}\n"


@pytest.mark.parametrize(
    ("tool", "args", "reason"),
    [
        ("qw-manager", [], "<target> is missing"),
        ("qw-manager", ["a:b", "c:d"], "give exactly one <target>"),
        ("qw-manager", ["-w", "0", "a:b"], "--workers must be at least 1, not 0"),
        ("qw-manager", ["-w", "two", "a:b"], "--workers must be a whole number, not 'two'"),
        ("qw-manager", ["--level=loud", "a:b"], "--level must be one of debug,info,warn,error"),
        ("qw-client", [], "a command is missing"),
        ("qw-client", ["frobnicate"], "unknown command line: frobnicate"),
        ("qw-client", ["workers", "a", "b"], "unknown command line"),
        ("qw-client", ["queue", "json", "{}"], "unknown command line"),
        ("qw-client", ["-p", "http", "managers"], "--port must be a whole number"),
        ("qw-client", ["--help=1"], "--help takes no value"),
    ],
)
def test_usage_errors_print_the_usage_and_exit_1(tool: str, args: list[str], reason: str) -> None:
    done = run_script(tool, *args)
    assert done.returncode == 1
    assert done.stdout == ""
    usage = (MANAGER_DOC if tool == "qw-manager" else CLIENT_DOC).split("\n\n")[0]
    assert done.stderr.startswith(usage + "\n")  # what docopt printed
    error = done.stderr[len(usage) + 1 :]
    assert error.startswith(f"{tool}: error: {reason}")
    assert error.count("\n") == 1


# -- qw-client on real Redis ----------------------------------------------------------------


@pytest.mark.redis
def test_queue_string_and_file(broker: Any, tmp_path: Path) -> None:
    done = run_script("qw-client", *REDIS_ARGS, "queue", "string", '{"a": "1"}')
    assert done.returncode == 0, done.stderr
    (job_id,) = re.fullmatch(f"Queued Job: ({UUID})\n", done.stdout).groups()  # type: ignore[union-attr]
    assert broker.queued_job_ids(None) == [job_id]
    assert broker.get_job(job_id).data == {"a": "1"}

    path = tmp_path / "job.json"
    path.write_text('{\n  "b": [1, 2]\n}\n', encoding="utf-8")
    done = run_script("qw-client", *REDIS_ARGS, "queue", "file", str(path), "web1")
    assert done.returncode == 0, done.stderr
    (job_id,) = re.fullmatch(f"Queued Job: ({UUID})\n", done.stdout).groups()  # type: ignore[union-attr]
    assert broker.queued_job_ids("web1") == [job_id]
    assert broker.get_job(job_id).data == {"b": [1, 2]}


@pytest.mark.redis
def test_queue_file_of_json_lines_from_stdin(broker: Any) -> None:
    done = run_script("qw-client", *REDIS_ARGS, "queue", "file", "-", input='{"n": 1}\n{"n": 2}\n')
    assert done.returncode == 0, done.stderr
    ids = re.findall(f"^Queued Job: ({UUID})$", done.stdout, flags=re.MULTILINE)
    assert broker.queued_job_ids(None) == ids
    assert len(ids) == 2


@pytest.mark.redis
def test_bad_json_queues_nothing(redis_db: Any) -> None:
    done = run_script("qw-client", *REDIS_ARGS, "queue", "string", '{"a": }')
    assert_one_line_error(done, "qw-client: error: invalid JSON in <data>: line 1, column 7")
    assert redis_db.keys("*") == []


@pytest.mark.redis
def test_listings_have_the_original_shape(broker: Any) -> None:
    broker.register_manager("web1")
    broker.register_worker(manager="web1", worker="web1.7")
    broker.register_worker(manager="web1", worker="web1.8")
    queued, held = Job.new({}, manager="web1"), Job.new({}, manager="web1")
    broker.queue_jobs([held, queued])
    broker.take(manager="web1", worker="web1.7", limit=1)

    assert run_script("qw-client", *REDIS_ARGS, "managers").stdout == "All Managers:\n\tweb1\n"
    assert run_script("qw-client", *REDIS_ARGS, "workers").stdout == "web1 Workers:\n\tweb1.7\n\tweb1.8\n"
    assert (
        run_script("qw-client", *REDIS_ARGS, "workers", "web1").stdout
        == "web1 Workers:\n\tweb1.7\n\tweb1.8\n"
    )
    jobs = run_script("qw-client", *REDIS_ARGS, "jobs", "web1").stdout
    assert jobs == f"web1:\n\tQueued Jobs:\n\t  {queued.id}\n\tPending Jobs:\n\t  web1.7 - {held.id}\n"


def test_unreachable_redis() -> None:
    done = run_script("qw-client", "-p", "1", "managers")
    assert_one_line_error(done, "qw-client: error:", "is Redis running at localhost:1?")


# -- qw-manager on real Redis ---------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
def test_manager_runs_jobs_and_stops_on_sighup(redis_db: Any, record_dir: Path) -> None:
    name = "legacy-cli-test"
    with Process(
        [*script("qw-manager"), "-w", "1", "-n", name, "--level=warn", *REDIS_ARGS, "qwtest_targets.record"]
    ) as manager:
        wait_for(
            lambda: redis_db.sismember("all:managers", name) or not manager.alive(),
            what="manager to register",
        )
        assert manager.alive(), manager.stderr.text()
        queued = run_script("qw-client", *REDIS_ARGS, "queue", "string", '{"x": 1}', name)
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.split()[-1]
        ran = wait_for_records(record_dir, "ran", 1)
        assert [(r["job_id"], r["data"]) for r in ran] == [(job_id, {"x": 1})]
        assert manager.stop(signal.SIGHUP) == 0, manager.stderr.text()
    assert not redis_db.sismember("all:managers", name)
    assert redis_db.smembers(f"{name}:workers") == set()
