"""``qw-manager`` and ``qw-client``: the original qw 0.1.1 commands, same grammar and output.

Their usage text, flags and defaults are the original docopt ones, byte for byte, so
``--help`` prints what it always printed and existing scripts keep working: ``-h`` is
``--host`` (help is ``--help`` only), options may come anywhere, a bad command line prints
the usage and exits 1. Both run on the ``redis`` backend at ``redis://HOST:PORT/DB``.

``qw-client`` prints what the original printed (``All Managers:`` then one tab-indented
name per line, and so on). Differences, all additive: ``queue file`` also accepts JSON
Lines (one ``Queued Job:`` line per job) and ``-`` for stdin; job data may be any JSON
value, not only an object; names are listed sorted; ``--version`` names the right
program; errors are one ``qw-client: error:`` line instead of a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import click

from qw_cli.argv import Option, Parsed, UsageError, parse
from qw_cli.errors import CliError, translate
from qw_cli.jobinput import decode, parse_document, parse_documents
from qw_cli.main import importable_here
from qw_cli.run import run_manager
from qw_core import __version__
from qw_core.backends import open_broker
from qw_core.logsetup import configure_logging
from qw_core.models import Job
from qw_core.naming import check_manager_name
from qw_core.plugins import PluginConfig, make_plugin_manager

if TYPE_CHECKING:
    from qw_core.broker import Broker, Inspector, Producer
    from qw_core.models import JSON

MANAGER_DOC = """\
Usage:
  qw-manager [--level=<log-level>] [--workers=<num-workers>] [--name=<name>] [--host=<host>] [--port=<port>] [--db=<db>] <target>
  qw-manager (--help | --version)

Options:
  --help                       Show this help message
  --version                    Show version information
  -l --level=<log-level>       Set the log level (debug,info,warn,error) [default: info]
  -w --workers=<num-workers>   Set the number of workers to start, defaults to number of cpus
  -n --name=<name>             Set the manager name, defaults to hostname
  -h --host=<host>             Set the redis host to use [default: localhost]
  -p --port=<port>             Set the redis port to use [default: 6379]
  -d --db=<db>                 Set the redis db number to use [default: 0]"""  # noqa: E501 - the original's text

CLIENT_DOC = """\
Usage:
  qw-client [--host=<host>] [--port=<port>] [--db=<db>] managers
  qw-client [--host=<host>] [--port=<port>] [--db=<db>] workers [<manager>]
  qw-client [--host=<host>] [--port=<port>] [--db=<db>] jobs [<manager>]
  qw-client [--host=<host>] [--port=<port>] [--db=<db>] queue string <data> [<manager>]
  qw-client [--host=<host>] [--port=<port>] [--db=<db>] queue file <file> [<manager>]
  qw-client (--help | --version)

Options:
  --help                       Show this help message
  --version                    Show version information
  -h --host=<host>             Set the redis host to use [default: localhost]
  -p --port=<port>             Set the redis port to use [default: 6379]
  -d --db=<db>                 Set the redis db number to use [default: 0]"""

REDIS_OPTIONS = (
    Option("--help"),
    Option("--version"),
    Option("--host", "-h", takes_value=True),
    Option("--port", "-p", takes_value=True),
    Option("--db", "-d", takes_value=True),
)
MANAGER_OPTIONS = (
    *REDIS_OPTIONS,
    Option("--level", "-l", takes_value=True),
    Option("--workers", "-w", takes_value=True),
    Option("--name", "-n", takes_value=True),
)
LEVELS = ("debug", "info", "warn", "error")


def qw_manager(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``qw-manager``: run a manager until SIGTERM, SIGINT or SIGHUP.

    Its target is imported with the current directory first on the path, as ``qw run``'s.
    """
    importable_here()
    _main("qw-manager", MANAGER_DOC, MANAGER_OPTIONS, _manager, argv)


def qw_client(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``qw-client``: list managers, workers and jobs, or queue a job."""
    _main("qw-client", CLIENT_DOC, REDIS_OPTIONS, _client, argv)


# -- shared plumbing --------------------------------------------------------------------


def _main(
    prog: str,
    doc: str,
    options: Sequence[Option],
    body: Callable[[Parsed], int],
    argv: Sequence[str] | None,
) -> None:
    """Parse, answer --help/--version, run ``body``; exit with its code or a one-line error."""
    args = sys.argv[1:] if argv is None else list(argv)
    parsed = Parsed({}, [])
    try:
        parsed = parse(args, options)
        if parsed.options.get("help"):
            click.echo(doc)
            sys.exit(0)
        if parsed.options.get("version"):
            click.echo(f"{prog} {__version__}")
            sys.exit(0)
        code = body(parsed)
    except UsageError as exc:
        click.echo(_usage_section(doc), err=True)
        click.echo(f"{prog}: error: {exc}", err=True)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        translate(exc, prog=prog, hint=_hint(parsed.options)).show()
        code = 1
    sys.exit(code)


def _usage_section(doc: str) -> str:
    return doc.split("\n\n", 1)[0]


def _hint(options: dict[str, str | bool]) -> str:
    host, port = options.get("host", "localhost"), options.get("port", "6379")
    return f"is Redis running at {host}:{port}? (choose another with --host, --port and --db)"


def _redis_url(options: dict[str, str | bool]) -> str:
    host = str(options.get("host", "localhost"))
    port = _integer(options, "port", "6379", low=1, high=65535)
    db = _integer(options, "db", "0", low=0)
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    return f"redis://{host}:{port}/{db}"


def _integer(
    options: dict[str, str | bool], key: str, default: str, *, low: int, high: int | None = None
) -> int:
    text = str(options.get(key, default))
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--{key} must be a whole number, not {text!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UsageError(f"--{key} must be {bounds}, not {value}")
    return value


def _open_redis(options: dict[str, str | bool]) -> Broker:
    return open_broker("redis", _redis_url(options))


# -- qw-manager -------------------------------------------------------------------------


def _manager(parsed: Parsed) -> int:
    if len(parsed.words) != 1:
        raise UsageError("give exactly one <target>" if parsed.words else "<target> is missing")
    level = str(parsed.options.get("level", "info")).lower()
    if level not in LEVELS and level != "warning":
        raise UsageError(f"--level must be one of {','.join(LEVELS)}, not {level!r}")
    workers = _integer(parsed.options, "workers", "0", low=1) if "workers" in parsed.options else None
    name = parsed.options.get("name")
    broker = _open_redis(parsed.options)  # checks --host/--port/--db before logging starts
    configure_logging(level)
    return run_manager(
        parsed.words[0],
        broker,
        workers=workers,
        name=str(name) if name is not None else None,
        plugins=PluginConfig(),
    )


# -- qw-client --------------------------------------------------------------------------


def _client(parsed: Parsed) -> int:
    words = parsed.words
    command, args = (words[0], words[1:]) if words else ("", [])
    if command == "managers" and not args:
        run: Callable[[Broker], None] = _print_managers
    elif command in ("workers", "jobs") and len(args) <= 1:
        manager = args[0] if args else None
        printer = _print_workers if command == "workers" else _print_jobs
        run = lambda b: printer(b, manager)  # noqa: E731 - one of four branches
    elif command == "queue" and len(args) in (2, 3) and args[0] in ("string", "file"):
        payloads = _payloads(args[0], args[1])  # parse before connecting: bad input queues nothing
        manager = args[2] if len(args) == 3 else None
        run = lambda b: _queue(b, payloads, manager)  # noqa: E731 - one of four branches
    else:
        raise UsageError(f"unknown command line: {' '.join(words)}" if words else "a command is missing")
    broker = _open_redis(parsed.options)
    try:
        run(broker)
    finally:
        broker.close()
    return 0


def _print_managers(broker: Inspector) -> None:
    click.echo("All Managers:")
    for manager in broker.managers():
        click.echo(f"\t{manager}")


def _managers(broker: Inspector, manager: str | None) -> list[str]:
    return [broker.check_name(manager)] if manager is not None else broker.managers()


def _print_workers(broker: Inspector, manager: str | None) -> None:
    for name in _managers(broker, manager):
        click.echo(f"{name} Workers:")
        for worker in broker.workers(name):
            click.echo(f"\t{worker}")


def _print_jobs(broker: Inspector, manager: str | None) -> None:
    for name in _managers(broker, manager):
        click.echo(f"{name}:")
        click.echo("\tQueued Jobs:")
        for job_id in _paged(functools.partial(broker.queued_job_ids, name)):
            click.echo(f"\t  {job_id}")
        click.echo("\tPending Jobs:")
        for worker in broker.workers(name):
            for job_id in _paged(functools.partial(broker.held_job_ids, worker)):
                click.echo(f"\t  {worker} - {job_id}")


#: Ids ``qw-client jobs`` reads at a time.
PAGE = 1000


def _paged(read: Callable[..., list[str]]) -> Iterator[str]:
    """Every id of a listing, read :data:`PAGE` at a time (``read(offset=, limit=)``): a
    queue may hold millions, which are never held at once."""
    offset = 0
    while True:
        ids = read(offset=offset, limit=PAGE)
        yield from ids
        if len(ids) < PAGE:
            return
        offset += len(ids)


def _payloads(kind: str, source: str) -> list[JSON]:
    if kind == "string":
        return [parse_document(source, "<data>")]
    if source == "-":
        return parse_documents(decode(sys.stdin.buffer.read(), "stdin"), "stdin")
    try:
        with open(source, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror or exc}", prog="qw-client") from None
    return parse_documents(decode(raw, source), source)


def _queue(broker: Producer, payloads: list[JSON], manager: str | None) -> None:
    if manager is not None:
        check_manager_name(broker, manager)
    jobs = [Job.new(payload, manager=manager) for payload in payloads]
    broker.queue_jobs(jobs)
    hook = make_plugin_manager().hook
    for job in jobs:
        hook.qw_job_queued(job=job)
        click.echo(f"Queued Job: {job.id}")
