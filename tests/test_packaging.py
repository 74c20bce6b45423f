"""The two distributions: what they hold, their metadata, and that they install and work on
their own.

Builds qw-core's and qw-redis's sdists from this checkout and their wheels from those
sdists, then installs wheels into fresh virtual environments (their dependencies come
from the package index): both together; and qw-core alone, whose commands then say which
package to install, then with its ``embedded`` extra, which brings qw-redis.
"""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import venv
import zipfile
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False)
    if check:
        assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both sdists, and each wheel built from its sdist (as pip builds one)."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    run(sys.executable, "-m", "build", "--outdir", out, ROOT / "qw_redis")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT / "qw_postgres")
    return out


def new_venv(path: Path) -> Path:
    """A fresh virtual environment; its bin folder."""
    venv.create(path, with_pip=True)
    return path / "bin"


def sdist_files(dist: Path, name: str) -> set[str]:
    [path] = dist.glob(f"{name}-*.tar.gz")
    with tarfile.open(path) as archive:
        return {member.name.split("/", 1)[1] for member in archive.getmembers() if member.isfile()}


def wheel_metadata(dist: Path, name: str) -> Message:
    [path] = dist.glob(f"{name}-*.whl")
    with zipfile.ZipFile(path) as wheel:
        [meta] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(wheel.read(meta))


def test_wheels_install_into_a_clean_venv(dist: Path, tmp_path: Path) -> None:
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["qw_core", "qw_postgres", "qw_redis"]

    bindir = new_venv(tmp_path / "venv")
    run(bindir / "python", "-m", "pip", "install", "--quiet", *sorted(dist.glob("*.whl")))

    run(bindir / "python", "-c", "import qw_core, qw_redis, qw_cli, qw_postgres.broker")
    version = run(bindir / "qw", "--version").stdout
    assert "1.0.0.dev0" in version
    backends = run(bindir / "qw", "backends").stdout
    assert "memory" in backends
    assert "redis" in backends
    assert "postgres" in backends
    # the wheels carry their type information
    for package in ("qw_core", "qw_redis", "qw_postgres"):
        check = f"import importlib.resources as r; assert r.files({package!r}).joinpath('py.typed').is_file()"
        run(bindir / "python", "-c", check)
    # the dashboard's templates and static files come with qw-core (its extra brings its libraries)
    for part in ("templates/base.html", "static/dashboard.js", "static/dashboard.css"):
        found = f"r.files('qw_core').joinpath('dashboard/{part}').is_file()"
        run(bindir / "python", "-c", f"import importlib.resources as r; assert {found}")


def test_qw_core_alone_names_the_package_to_install_and_its_embedded_extra_brings_it(
    dist: Path, tmp_path: Path
) -> None:
    bindir = new_venv(tmp_path / "venv")
    [core] = dist.glob("qw_core-*.whl")
    run(bindir / "python", "-m", "pip", "install", "--quiet", core)
    for command in (
        ["qw", "status"],
        ["qw", "run", "--embedded", "qw_core.examples:echo"],
        ["qw-manager", "t:f"],
    ):
        done = run(bindir / command[0], *command[1:], check=False)
        assert done.returncode == 1, done
        [line] = done.stderr.splitlines()
        assert f"{command[0]}: error: unknown backend 'redis'" in line
        assert line.endswith("it comes with the qw-redis package: pip install qw-redis"), line
        assert "embedded Redis-protocol server" not in done.stdout + done.stderr, "no server before the error"
    # The embedded extra brings what --embedded runs: qw-redis (here from the wheel built
    # beside it) and fakeredis with Lua.
    run(bindir / "python", "-m", "pip", "install", "--quiet", "--find-links", dist, f"{core}[embedded]")
    run(bindir / "python", "-c", "import qw_redis, fakeredis, lupa")
    assert "redis" in run(bindir / "qw", "backends").stdout


def test_the_sdists_hold_the_packages_their_tests_and_what_those_read(dist: Path) -> None:
    core = sdist_files(dist, "qw_core")
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= core
    assert {"qw_core/py.typed", "qw_cli/main.py", "tests/conftest.py", "tests/redis/test_tls.py"} <= core
    tops = {name.split("/", 1)[0] for name in core}
    assert tops <= {
        "qw_core",
        "qw_cli",
        "tests",
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "PKG-INFO",
        ".gitignore",
        "docs",
        "examples",
        "bench",
        "tools",
        "mkdocs.yml",
        "CHANGELOG.md",
        "noxfile.py",
    }
    # what the tests read beside the packages
    read = {"docs/index.md", "mkdocs.yml", "bench/run.py", "tools/mutants.py"}
    assert read | {"examples/qw-slowjobs/src/qw_slowjobs/__init__.py"} <= core
    redis_files = sdist_files(dist, "qw_redis")
    assert {
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "src/qw_redis/py.typed",
        "src/qw_redis/lua/take.lua",
    } <= redis_files
    assert {
        "tests/conftest.py",
        "tests/redis/test_contract.py",
        "tests/fixtures/qwtest_redis.py",
    } <= redis_files
    tops = {name.split("/", 1)[0] for name in redis_files}
    assert tops <= {"src", "tests", "LICENSE", "README.md", "pyproject.toml", "PKG-INFO", ".gitignore"}
    assert not any("__pycache__" in name for name in core | redis_files)


def test_both_wheels_say_their_license_readme_pythons_and_typing(dist: Path) -> None:
    core, backend = wheel_metadata(dist, "qw_core"), wheel_metadata(dist, "qw_redis")
    for meta in (core, backend):
        assert meta["License-Expression"] == "MIT"
        assert meta.get_all("License-File") == ["LICENSE"]
        assert meta["Description-Content-Type"] == "text/markdown"
        assert len(meta.get_payload()) > 500, "a readme"
        classifiers = meta.get_all("Classifier") or []
        assert "Typing :: Typed" in classifiers
        assert [c for c in classifiers if c.startswith("Programming Language :: Python :: 3.")] == [
            f"Programming Language :: Python :: 3.{minor}" for minor in (10, 11, 12, 13)
        ]
    requires = backend.get_all("Requires-Dist") or []
    assert "qw-core<1.1,>=1.0.0.dev0" in requires, "qw-redis names the qw-core interface it was built for"
    extras = core.get_all("Requires-Dist") or []
    assert "qw-redis<1.1,>=1.0.0.dev0; extra == 'embedded'" in extras
    assert "pytest>=8; extra == 'testing'" in extras
    assert "starlette>=0.37; extra == 'dashboard'" in extras
