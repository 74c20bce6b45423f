"""Developer and CI sessions: ``nox`` runs the test suite on the newest Python qw claims,
all but its slow tests on the oldest, lint, types and the documentation.

One data-driven file for the three distributions: each session installs the packages from
this checkout (qw-core at the root, qw-redis in ./qw_redis, qw-postgres in ./qw_postgres)
plus the dependency group it needs from pyproject.toml, into a fresh virtualenv.

Sessions that run the test suite:

- ``tests``: on the interpreter nox runs with (for working on the code);
- ``pythons``: on each Python the package claims (:data:`PYTHONS`, from its classifiers),
  ``pythons-3.10`` on one; ``nox`` runs it on the newest;
- ``fast``: on the oldest Python, without the tests marked ``slow`` (the multi-process and
  fault-injection ones, over half the suite's time): what differs between Pythons is the
  language and the standard library, which the rest of the suite runs through, asyncio and
  the worker loop included; ``nox`` runs it, keeping CI well under a quarter of an hour;
- ``lowest``: on the oldest Python with every dependency at the lowest version
  pyproject.toml allows (the ``>=`` bounds of qw-core, qw-redis and their extras), so a
  bound that no longer works is found. Not part of ``nox`` (it is another whole run of the
  suite): run ``nox -s lowest`` after changing a dependency or a bound.

``nox`` also runs ``lint``, ``types`` and ``docs`` (the documentation site, built in strict
mode in a few seconds; its code examples run in the test suite).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox
import nox.command
from packaging.requirements import Requirement

nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
REDIS_PYPROJECT = nox.project.load_toml("qw_redis/pyproject.toml")
POSTGRES_PYPROJECT = nox.project.load_toml("qw_postgres/pyproject.toml")
LOCAL_PACKAGES = [
    *("-e", ".[embedded,prometheus,testing,dashboard,uvloop]"),
    *("-e", "./qw_redis[hiredis]"),
    *("-e", "./qw_postgres"),
]

#: Every Python the package claims, oldest first (its "Programming Language :: Python :: 3.X").
PYTHONS = [
    c.rsplit(" :: ", 1)[1]
    for c in PYPROJECT["project"]["classifiers"]
    if c.startswith("Programming Language :: Python :: 3.")
]
OLDEST, NEWEST = PYTHONS[0], PYTHONS[-1]

nox.options.sessions = [f"fast-{OLDEST}", f"pythons-{NEWEST}", "lint", "types", "docs"]


def select_pyenv_pythons() -> None:
    """Where pyenv provides the Pythons (as on the project's machines), select each claimed
    one that it has installed beside the current one: its ``python3.X`` shims run only the
    selected versions, so nox would not find the others."""
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return
    found = subprocess.run([pyenv, "version-name"], capture_output=True, text=True, check=False)
    installed = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True, check=False)
    selected = [name for name in found.stdout.strip().split(":") if name]
    for python in PYTHONS:
        releases = [name for name in installed.stdout.split() if name.startswith(f"{python}.")]
        newest = max(releases, key=lambda name: [int(part) for part in name.split(".")], default=None)
        if newest is not None and newest not in selected:
            selected.append(newest)
    if selected:
        os.environ["PYENV_VERSION"] = ":".join(selected)


select_pyenv_pythons()


def install_group(session: nox.Session, group: str, *, local: bool = True, constraints: str = "") -> None:
    """Install a dependency group (and, unless told not to, the two local packages)."""
    requirements = nox.project.dependency_groups(PYPROJECT, group)
    pinned = ["-c", constraints] if constraints else []
    session.install(*pinned, *(LOCAL_PACKAGES if local else []), *requirements)


def lowest_bounds() -> list[str]:
    """``name==X`` for each ``name>=X`` that qw-core, qw-redis and their extras require."""
    requirements = [
        *PYPROJECT["project"]["dependencies"],
        *REDIS_PYPROJECT["project"]["dependencies"],
        *POSTGRES_PYPROJECT["project"]["dependencies"],
    ]
    for project in (PYPROJECT, REDIS_PYPROJECT, POSTGRES_PYPROJECT):
        for extra in project["project"].get("optional-dependencies", {}).values():
            requirements.extend(extra)
    pins = {}
    for text in requirements:
        requirement = Requirement(text)
        for spec in requirement.specifier:
            if spec.operator == ">=" and not requirement.name.startswith("qw-"):
                pins[requirement.name] = f"{requirement.name}=={spec.version}"
    return sorted(pins.values()) + LOWEST_COMPANIONS


#: Test tools that must be older to work with the lowest versions: Starlette 0.37's test
#: client hands ``app=`` to httpx's client, which httpx 0.28 no longer takes.
LOWEST_COMPANIONS = ["httpx<0.28"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite; needs ``redis-server`` on the PATH (each test process starts its own)."""
    install_group(session, "test")
    run_suite(session)


@nox.session(python=PYTHONS)
def pythons(session: nox.Session) -> None:
    """The whole test suite on one of the Pythons the package claims."""
    install_group(session, "test")
    run_suite(session)


@nox.session(python=[OLDEST])
def fast(session: nox.Session) -> None:
    """The test suite but its ``slow`` tests, on the oldest Python the package claims."""
    install_group(session, "test")
    run_suite(session, without_slow=True)


@nox.session(python=OLDEST)
def lowest(session: nox.Session) -> None:
    """The whole test suite with each dependency at its lowest allowed version."""
    constraints = Path(session.create_tmp()) / "lowest.txt"
    constraints.write_text("\n".join(lowest_bounds()) + "\n", encoding="utf-8")
    install_group(session, "test", constraints=str(constraints))
    session.run("python", "-m", "pip", "list", "--format=freeze")  # what the run was at
    run_suite(session)


def run_suite(session: nox.Session, *, without_slow: bool = False) -> None:
    """pytest in two parts: the parallel one, then the ``serial`` tests alone (with
    ``without_slow``, the parallel part leaves out the tests marked ``slow``)."""
    # Three processes on two cores: most of the suite waits on worker processes, Redis and
    # timers rather than the CPU. Then the few tests that assert a wall-clock bound run
    # alone; they run (and are reported) even when the parallel part failed.
    # A subset (``nox -s tests -- -k enqueue``) may select no test of a part (pytest's exit
    # code 5); the whole suite must select some in each, or a lost marker would go unseen.
    codes = [0, 5] if session.posargs else [0]
    failed = []
    parallel = "not serial and not slow" if without_slow else "not serial"
    for part, args in (("parallel", ["-n", "3", "-m", parallel]), ("serial", ["-m", "serial"])):
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
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml, docs/) built in strict mode into ``site/``: a
    broken link, a missing API reference or any other warning fails the build.
    ``nox -s docs -- serve`` serves it with live reload instead."""
    install_group(session, "docs")
    session.env["NO_MKDOCS_2_WARNING"] = "1"  # Material's banner about MkDocs 2, on every build
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:])
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs)


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
