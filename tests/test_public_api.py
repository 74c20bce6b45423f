"""The packages' public names, which load on first use: each one is there, and importing
the package alone imports none of their modules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["qw_core", "qw_redis"])
def test_every_public_name_loads_from_its_module(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


@pytest.mark.parametrize(
    ("package", "heavy"),
    [
        ("qw_core", ["qw_core.broker", "qw_core.plugins", "pluggy", "attrs"]),
        ("qw_redis", ["redis", "qw_core.manager"]),
    ],
)
def test_importing_the_package_imports_none_of_its_modules(package: str, heavy: list[str]) -> None:
    code = f"import sys, {package}; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_names_type_checkers_see_are_the_names_exported() -> None:
    import qw_core

    assert set(qw_core._EXPORTS) == set(qw_core.__all__) - {"__version__"}
