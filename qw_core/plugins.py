"""Building the plugin manager: built-ins, entry points, ``-p`` modules, in that order.

Nothing here runs at import time; :func:`make_plugin_manager` builds a fresh manager each
call (tests build one each), so no test needs a back door to reset global state.

Built-in behaviour is ordinary plugins listed in :data:`DEFAULT_PLUGINS`, and any of them
can be blocked by name (``disabled=["qw.builtin.logging"]``), like pytest's ``-p no:NAME``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType

import attrs
import pluggy

from qw_core import hookspecs
from qw_core.errors import PluginError

PROJECT = "qw"
#: The entry-point group third-party plugins register under.
ENTRY_POINT_GROUP = "qw"

hookimpl = pluggy.HookimplMarker(PROJECT)

#: Built-in plugins: (registration name, module). Each is blockable by its name.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("qw.builtin.targets", "qw_core.builtin.targets"),
    ("qw.builtin.runner", "qw_core.builtin.runner"),
    ("qw.builtin.failures", "qw_core.builtin.failures"),
    ("qw.builtin.logging", "qw_core.builtin.logging"),
)


@attrs.frozen(kw_only=True)
class PluginConfig:
    """Which plugins a process loads; picklable, so each worker rebuilds the same set.

    :param modules: importable module names to register as plugins (``qw run -p``).
    :param disabled: plugin names to block (built-in or entry-point names).
    :param entry_points: load plugins installed under the ``qw`` entry-point group.
    """

    modules: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    entry_points: bool = True


def make_plugin_manager(
    config: PluginConfig | None = None, *, extra: Iterable[object] = ()
) -> pluggy.PluginManager:
    """Build a plugin manager for one process.

    Order: add the specs, block disabled names, register the built-ins, load the ``qw``
    entry points, register ``config.modules`` and ``extra`` plugin objects, then
    ``check_pending()`` so an implementation of a hook that does not exist is an error.

    :raises PluginError: a module cannot be imported or implements an unknown hook.
    """
    config = config or PluginConfig()
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in config.disabled:
        pm.set_blocked(name)
    for name, module_name in DEFAULT_PLUGINS:
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(module_name), name=name)
    if config.entry_points:
        _load_entry_points(pm)
    for module_name in config.modules:
        module = _import_plugin(module_name)
        if not pm.is_blocked(module_name) and not pm.is_registered(module):  # may be an entry point too
            pm.register(module, name=module_name)
    for plugin in extra:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    return pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as exc:  # any error raised by third-party plugin code at import
        raise PluginError(
            f"a plugin installed under the {ENTRY_POINT_GROUP!r} entry points failed to load: {exc}"
        ) from exc


def _import_plugin(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"plugin module {module_name!r} cannot be imported: {exc}") from exc


def describe_plugins(pm: pluggy.PluginManager) -> list[dict[str, object]]:
    """Name, distribution, version and implemented hooks of each registered plugin."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    rows: list[dict[str, object]] = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        dist = dists.get(id(plugin))
        rows.append(
            {
                "name": name,
                "distribution": dist.project_name if dist is not None else None,
                "version": dist.version if dist is not None else None,
                "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or []),
            }
        )
    return rows
