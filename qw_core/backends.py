"""Finding backends: the ``qw.backends`` entry-point group, resolved lazily by name.

A backend distribution declares ``[project.entry-points."qw.backends"] NAME = "pkg.mod:Class"``
where the class implements :class:`~qw_core.broker.Broker`. Installing it with pip is all
the configuration there is. The core never imports a backend by name (its own in-memory
backend is registered the same way), so adding one never touches this module.
"""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points

from qw_core.broker import Broker
from qw_core.errors import BackendError, BackendNotFound

ENTRY_POINT_GROUP = "qw.backends"

#: The distribution that provides each backend qw's own project publishes, named when
#: such a backend is not installed (only to say what to install: backends are still found
#: by their entry points alone).
KNOWN_DISTRIBUTIONS = {"redis": "qw-redis", "postgres": "qw-postgres"}


def available_backends() -> dict[str, EntryPoint]:
    """Installed backends by name (not imported)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_backend(name: str) -> type[Broker]:
    """The broker class registered as ``name``.

    :raises BackendNotFound: nothing is registered under ``name``; the message lists what
        is installed and suggests the closest name.
    :raises BackendError: the backend is installed but fails to import.
    """
    backends = available_backends()
    ep = backends.get(name)
    if ep is None:
        known = ", ".join(sorted(backends)) or "none"
        close = difflib.get_close_matches(name, backends, n=1)
        package = KNOWN_DISTRIBUTIONS.get(name)
        if package is not None:
            hint = f"; it comes with the {package} package: pip install {package}"
        elif close:
            hint = f"; did you mean {close[0]!r}?"
        else:
            hint = "; install the package that provides it (it registers a qw.backends entry point)"
        raise BackendNotFound(f"unknown backend {name!r} (installed: {known}){hint}")
    try:
        cls = ep.load()
    except Exception as exc:  # third-party import failure, reported in one line
        raise BackendError(f"backend {name!r} ({ep.value}) failed to import: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Broker)):
        raise BackendError(f"backend {name!r} ({ep.value}) is not a qw_core.Broker subclass")
    return cls


def open_broker(name: str, url: str | None = None) -> Broker:
    """Open the broker of backend ``name`` at ``url``."""
    return load_backend(name).from_url(url)
