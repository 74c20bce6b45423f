"""The built-in target loader: ``module:attr`` and the original ``module.attr`` forms."""

from __future__ import annotations

from typing import Any

from qw_core.plugins import hookimpl
from qw_core.targets import import_target


@hookimpl(trylast=True)
def qw_load_target(spec: str) -> Any:
    """Import the object ``spec`` names; the caller checks that it is callable."""
    return import_target(spec)
