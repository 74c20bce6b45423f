"""Developer and CI sessions: ``nox`` runs tests, lint and types; ``nox -s wheels`` too.

One data-driven file for both distributions: each session installs the two packages from
this checkout (qw-core at the root, qw-redis in ./qw_redis) plus the dependency group it
needs from pyproject.toml, into a fresh virtualenv on the interpreter nox runs with.
"""

from __future__ import annotations

import nox
import nox.command

nox.options.sessions = ["tests", "lint", "types"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
LOCAL_PACKAGES = ["-e", ".[embedded]", "-e", "./qw_redis[hiredis]"]


def install_group(session: nox.Session, group: str, *, local: bool = True) -> None:
    """Install a dependency group (and, unless told not to, the two local packages)."""
    requirements = nox.project.dependency_groups(PYPROJECT, group)
    session.install(*(LOCAL_PACKAGES if local else []), *requirements)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite; needs ``redis-server`` on the PATH (each test process starts its own)."""
    install_group(session, "test")
    # Three processes on two cores: most of the suite waits on worker processes, Redis and
    # timers rather than the CPU. Then the few tests that assert a wall-clock bound run
    # alone; they run (and are reported) even when the parallel part failed.
    # A subset (``nox -s tests -- -k enqueue``) may select no test of a part (pytest's exit
    # code 5); the whole suite must select some in each, or a lost marker would go unseen.
    codes = [0, 5] if session.posargs else [0]
    failed = []
    for part, args in (("parallel", ["-n", "3", "-m", "not serial"]), ("serial", ["-m", "serial"])):
        try:
            session.run("pytest", *args, *session.posargs, success_codes=codes)
        except nox.command.CommandFailed:
            failed.append(part)
    if failed:
        session.error(f"the {' and '.join(failed)} part of the test suite failed")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository."""
    install_group(session, "lint", local=False)
    session.run("ruff", "check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict on the three packages."""
    install_group(session, "types")
    session.run("mypy")


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing (slow, not part of ``nox``): mutmut over qw_core's Python, then the
    hand-written mutants of the Lua scripts and settle paths (``tools/mutants.py``), each
    of which the tests must fail. ``nox -s mutants -- hand`` runs only the second part."""
    install_group(session, "test")
    install_group(session, "mutants", local=False)
    if "hand" not in session.posargs:
        session.run("mutmut", "run", success_codes=[0, 1, 2])
        session.run("mutmut", "results")
    session.run("python", "tools/mutants.py")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark against the peers (not a test): ``nox -s bench -- --help``."""
    install_group(session, "bench")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def backlog(session: nox.Session) -> None:
    """What qw costs as a backlog grows (not a test): ``nox -s backlog -- --quick``."""
    install_group(session, "bench")
    session.install(*PYPROJECT["project"]["optional-dependencies"]["prometheus"])  # the metrics scrape
    session.run("python", "bench/backlog.py", *session.posargs)
