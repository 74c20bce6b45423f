"""Every code example of the documentation (docs/**/*.md) runs, so the docs cannot rot.

What each kind of block must do:

- **Python files** (a first line ``# PATH``, such as ``# myapp/jobs.py``) are written into
  a fresh folder per page, the page's example project. Those under ``tests/`` are run
  there with ``python -m pytest``, as their reader would, and must all pass; modules in a
  package (``myapp/jobs.py``) are imported; a script at the top (``run_manager.py``)
  runs forever or needs a set-up of its own, so a test here runs it
  (:data:`SCRIPTS`). **TOML files** are written and parsed.
- **Python snippets** (any other Python block) run in order, in one namespace per page,
  in that folder, in a fresh interpreter. ``redis://localhost:6379/0`` (and the original
  API's ``host="localhost", port=6379, db=0``) stand for a private database of the
  tests' own Redis server (:data:`DOCS_DB`), flushed before each page.
- **Console blocks, systemd units and Kubernetes manifests**: every ``qw`` command line
  in them is parsed by the real click commands, options and arguments included, so a
  renamed or removed option fails here. (They are not run: they start long-lived
  managers or need a Redis of the reader's.)
- **Includes** (``--8<-- "path"``) show a file of the repository that its own tests run
  (``examples/qw-slowjobs``: ``tests/plugins/test_slowjobs_example.py``).
- ``text`` and ``mermaid`` blocks are not code; the Redis commands of the protocol page
  are run by :func:`test_the_protocol_pages_hand_written_jobs_run`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from qwtest_docs import DOCS, ROOT, Block, blocks, docs_block, pages
from qwtest_postgres import fresh_database
from qwtest_redis import REDIS_HOST, flushed_db, redis_url, shared_port
from qwtest_wait import wait_for

from qw_cli.main import main
from qw_core import Job, Outcome
from qw_core.testing import run_jobs
from qw_redis import RedisBroker

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

#: The database of the tests' Redis server the examples use.
DOCS_DB = 15
#: Languages of blocks that hold code, and those that do not.
CODE = {"python", "console", "toml", "ini", "yaml"}
NOT_CODE = {"text", "mermaid"}
#: Top-level scripts of the examples, and the test that runs each.
SCRIPTS = {
    ("tutorial/first-app.md", "run_manager.py"): "test_the_tutorials_manager_runs_the_tutorials_target",
    ("how-to/original-api.md", "basic_usage.py"): (
        "test_the_original_basic_usage_runs_with_only_its_import_changed"  # tests/redis/test_compat.py
    ),
}
#: Where each test of :data:`SCRIPTS` is.
SCRIPT_TESTS = (Path(__file__), ROOT / "tests" / "redis" / "test_compat.py")

ALL_BLOCKS = [block for page in pages() for block in blocks(page)]


#: The reader's PostgreSQL database in the examples, replaced by one made for the page.
READERS_POSTGRES = "postgresql://localhost/app"


def substituted(code: str, postgres: str = READERS_POSTGRES) -> str:
    """``code`` with the reader's Redis replaced by the tests' database (and the reader's
    PostgreSQL database by ``postgres``)."""
    return (
        code.replace("redis://localhost:6379/0", redis_url(DOCS_DB))
        .replace(
            'host="localhost", port=6379, db=0', f'host="{REDIS_HOST}", port={shared_port()}, db={DOCS_DB}'
        )
        .replace(READERS_POSTGRES, postgres)
    )


def file_blocks(page: str) -> list[Block]:
    return [b for b in blocks(page) if b.lang in ("python", "toml") and b.path is not None and not b.include]


def snippet_blocks(page: str) -> list[Block]:
    return [b for b in blocks(page) if b.lang == "python" and b.path is None and not b.include]


def write_project(page: str, folder: Path) -> list[Block]:
    """Write the page's files into ``folder``; its file blocks."""
    files = file_blocks(page)
    for block in files:
        assert block.path is not None
        target = folder / block.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(substituted(block.body), encoding="utf-8")
    return files


def clean_env() -> dict[str, str]:
    """The environment of a reader's shell: nothing of the test suite's on the path."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("QW_")}


# -- the blocks -------------------------------------------------------------------------------


def test_every_block_is_of_a_known_kind() -> None:
    unknown = [f"{b.where} ({b.lang or 'no language'})" for b in ALL_BLOCKS if b.lang not in CODE | NOT_CODE]
    assert not unknown, f"say how the tests run these blocks (in this module): {', '.join(unknown)}"


def test_every_top_level_script_is_run_by_a_test_of_its_own() -> None:
    sources = "\n".join(path.read_text(encoding="utf-8") for path in SCRIPT_TESTS)
    for page in pages():
        for block in file_blocks(page):
            assert block.path is not None
            if "/" in block.path or not block.path.endswith(".py"):
                continue
            test = SCRIPTS.get((page, block.path))
            assert test is not None, f"{block.where}: which test runs {block.path}? (SCRIPTS)"
            assert f"def {test}(" in sources, test
            assert f'"{block.path}"' in sources or f"# {block.path}" in sources, (test, block.path)


def test_included_files_exist_and_have_tests_of_their_own() -> None:
    included = [b for b in ALL_BLOCKS if b.include]
    assert included, "the plugin how-to shows the example plugin's files"
    for block in included:
        for line in block.body.splitlines():
            path = ROOT / shlex.split(line.removeprefix("--8<--"))[0]
            assert path.is_file(), f"{block.where}: {path}"
            assert path.is_relative_to(ROOT / "examples" / "qw-slowjobs"), (
                f"{block.where}: which test runs {path}?"
            )


# -- Python -----------------------------------------------------------------------------------

RUNNER = """\
import importlib, json, sys, traceback
sys.path.insert(0, ".")
for module in json.loads(sys.argv[1]):
    importlib.import_module(module)
namespace = {"__name__": "__main__"}
for where, code in json.loads(sys.argv[2]):
    try:
        exec(compile(code, where, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"the example at {where} failed")
"""

PYTHON_PAGES = [page for page in pages() if file_blocks(page) or snippet_blocks(page)]


@pytest.fixture
def docs_db() -> Iterator[Any]:
    with flushed_db(DOCS_DB) as client:
        yield client


@pytest.fixture
def docs_postgres() -> Iterator[str]:
    """A PostgreSQL database of the page's own on the tests' server, dropped afterwards."""
    with fresh_database() as url:
        yield url


@pytest.mark.redis
@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_the_pages_python_runs(page: str, tmp_path: Path, docs_db: Any, docs_postgres: str) -> None:
    files = write_project(page, tmp_path)
    for block in files:
        if block.lang == "toml":
            tomllib.loads(block.body)  # raises on a TOML error
    modules = [
        b.path.removesuffix(".py").replace("/", ".")
        for b in files
        if b.lang == "python" and b.path and "/" in b.path and not b.path.startswith("tests/")
    ]
    for block in files:  # every Python file at least compiles, the scripts included
        if block.lang == "python":
            assert block.path is not None
            compile(block.body, block.where, "exec")
    snippets = [(b.where, substituted(b.body, docs_postgres)) for b in snippet_blocks(page)]
    if modules or snippets:
        (tmp_path / "_run_examples.py").write_text(RUNNER, encoding="utf-8")
        ran = subprocess.run(
            [sys.executable, "_run_examples.py", json.dumps(modules), json.dumps(snippets)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
    if (tmp_path / "tests").is_dir():
        tested = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "tests"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=300,
            check=False,
        )
        assert tested.returncode == 0, tested.stdout + tested.stderr
        summary = tested.stdout.strip().splitlines()[-1]
        assert " passed" in summary, summary
        assert "skipped" not in summary, summary
        assert "xfail" not in summary, summary


@pytest.mark.redis
@pytest.mark.slow
def test_the_tutorials_manager_runs_the_tutorials_target(tmp_path: Path, docs_db: Any) -> None:
    """``run_manager.py`` of the tutorial runs ``myapp.jobs:handle`` on Redis until SIGTERM."""
    write_project("tutorial/first-app.md", tmp_path)
    broker = RedisBroker.from_url(redis_url(DOCS_DB))
    job_id = broker.queue_job(Job.new({"image": "cat.png"}))
    proc = subprocess.Popen(
        [sys.executable, "run_manager.py"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean_env(), "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for(lambda: not docs_db.exists(f"job:{job_id}"), what="the job to run and be finished")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.close()
    assert proc.returncode == 0, err
    assert "resizing cat.png" in out.splitlines(), out + err


@pytest.mark.redis
def test_the_protocol_pages_hand_written_jobs_run(docs_db: Any) -> None:
    """The Redis commands of the protocol reference, sent as they are written, queue jobs a
    qw worker runs with the data they say."""
    page = "reference/redis-protocol.md"
    by_hand = docs_block(page, "HSET job:6f1c2a40-5d1b-4a51-9d1e-0b7f3a1c9e21 image cat.png size 3", "text")
    typed = docs_block(page, "HSET job:<id> image cat.png size 3", "text").replace("<id>", "typed-1")
    for text in (by_hand, typed):
        for line in text.strip().splitlines():
            name, key, *rest = line.split(" ", 2)
            if name == "SET":  # its value is JSON, spaces and all
                docs_db.execute_command(name, key, rest[0])
            else:
                docs_db.execute_command(name, key, *(rest[0].split() if rest else []))
    seen: dict[str, Any] = {}
    broker = RedisBroker.from_url(redis_url(DOCS_DB))
    try:
        runs = run_jobs(broker, seen.__setitem__)  # target(job_id, job_data)
    finally:
        broker.close()
    assert [run.outcome for run in runs] == [Outcome.SUCCEEDED, Outcome.SUCCEEDED]
    assert seen == {
        "6f1c2a40-5d1b-4a51-9d1e-0b7f3a1c9e21": {"image": "cat.png", "size": "3"},  # strings, as stored
        "typed-1": {"image": "cat.png", "size": 3},  # the marker says "size" is JSON
    }


# -- command lines ----------------------------------------------------------------------------


def parse_qw(argv: list[str]) -> None:
    """Parse ``qw ARGV`` with the real commands (options, types and arguments), running
    nothing: a group's subcommand is resolved and parsed in turn."""
    command: click.Command = main
    ctx = main.make_context("qw", list(argv))
    while isinstance(command, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            return
        name, sub, args = command.resolve_command(ctx, rest)
        assert sub is not None, rest
        assert name is not None, rest
        command = sub
        ctx = sub.make_context(name, args, parent=ctx)


def qw_lines(block: Block) -> Iterator[list[str]]:
    """The ``qw`` command lines of a console block, systemd unit or manifest."""
    if block.lang == "console":
        for line in block.body.splitlines():
            words = shlex.split(line.removeprefix("$ "), comments=True)
            if "|" in words:
                words = words[words.index("|") + 1 :]
            if words[:1] == ["qw"]:
                yield words[1:]
    elif block.lang == "ini":
        for line in block.body.splitlines():
            if line.startswith("ExecStart="):
                words = shlex.split(line.removeprefix("ExecStart="))
                assert Path(words[0]).name == "qw", line
                yield words[1:]
    elif block.lang == "yaml":
        for document in yaml.safe_load_all(block.body):
            yield from _manifest_commands(document)


def _manifest_commands(node: Any) -> Iterator[list[str]]:
    if isinstance(node, dict):
        command = node.get("command")
        if isinstance(command, list) and command[:1] == ["qw"]:
            yield [str(word) for word in command[1:]] + [str(word) for word in node.get("args", [])]
        for value in node.values():
            yield from _manifest_commands(value)
    elif isinstance(node, list):
        for value in node:
            yield from _manifest_commands(value)


#: The README's command lines are checked too (its Python runs in test_readme_examples.py).
COMMAND_BLOCKS = [b for b in [*ALL_BLOCKS, *blocks("../README.md")] if b.lang in ("console", "ini", "yaml")]


@pytest.mark.parametrize("block", COMMAND_BLOCKS, ids=[b.where for b in COMMAND_BLOCKS])
def test_the_qw_command_lines_parse(block: Block) -> None:
    lines = list(qw_lines(block))
    if block.lang in ("ini", "yaml"):
        assert lines, f"{block.where}: a unit or manifest that runs no qw command"
    for argv in lines:
        try:
            parse_qw(argv)
        except click.ClickException as exc:
            pytest.fail(f"{block.where}: qw {shlex.join(argv)}: {exc.format_message()}")


def test_a_wrong_option_fails_the_parse() -> None:
    """The check above would catch a renamed option (the parse is not lenient)."""
    parse_qw(["run", "-w", "4", "--grace", "10", "myapp.jobs:handle"])
    parse_qw(["failed", "requeue", "--all", "--quiet"])
    for argv in (
        ["run", "--workerz", "4", "t:f"],
        ["failed", "requeue", "--everything"],
        ["enqueue", "--delay"],
    ):
        with pytest.raises(click.ClickException):
            parse_qw(argv)


def test_the_cli_reference_has_every_command_and_option() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from docs_cli import cli_reference, commands
    finally:
        sys.path.remove(str(ROOT / "tools"))
    reference = cli_reference()
    for path, command, ctx in commands():
        assert f"`{path}` {{ #{path.replace(' ', '-')} }}" in reference, path
        for param in command.get_params(ctx):
            if isinstance(param, click.Option):
                for flag in param.opts:
                    assert flag in reference, (path, flag)
    assert (DOCS / "reference" / "cli.md").read_text(encoding="utf-8").count("<!-- qw-cli-reference -->") == 1
