"""Building the plugin manager: built-ins, entry points, ``-p`` modules, in that order.

Nothing here runs at import time; :func:`make_plugin_manager` builds a fresh manager each
call (tests build one each), so no test needs a back door to reset global state.

Built-in behaviour is ordinary plugins listed in :data:`DEFAULT_PLUGINS`, and any of them
can be blocked by name (``disabled=["qw.builtin.logging"]``), like pytest's ``-p no:NAME``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import attrs
import pluggy

from qw_core import hookspecs
from qw_core.errors import PluginError
from qw_core.models import JSON
from qw_core.policy import RetryPolicy

PROJECT = "qw"
#: The entry-point group third-party plugins register under.
ENTRY_POINT_GROUP = "qw"

hookimpl = pluggy.HookimplMarker(PROJECT)

#: Built-in plugins: (registration name, ``module`` or ``module:factory``). A factory is
#: called with the :class:`PluginConfig` and returns the plugin object (for built-ins with
#: settings). Each is blockable by its name. Order matters among the ``trylast`` defaults
#: of one hook, which pluggy calls in registration order: the retry plugin comes before
#: the failure default, so it decides first.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("qw.builtin.targets", "qw_core.builtin.targets"),
    ("qw.builtin.runner", "qw_core.builtin.runner"),
    ("qw.builtin.retries", "qw_core.builtin.retries:RetryPlugin.from_config"),
    ("qw.builtin.failures", "qw_core.builtin.failures"),
    ("qw.builtin.logging", "qw_core.builtin.logging"),
)


#: Hooks without which no job can run: blocking their built-in implementation is allowed
#: only with a replacement (a job would otherwise "succeed" without its target running).
ESSENTIAL_HOOKS = ("qw_load_target", "qw_job_run")


def _options(value: Mapping[str, JSON] | None) -> Mapping[str, JSON]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class PluginConfig:
    """Which plugins a process loads, and their settings; picklable, so each worker
    rebuilds the same set.

    :param modules: importable module names to register as plugins (``qw run -p``).
    :param disabled: plugin names to block (built-in or entry-point names); a name that
        is neither is an error, so a typo cannot leave a plugin running unnoticed.
    :param entry_points: load plugins installed under the ``qw`` entry-point group.
    :param retry: the retry policy of the built-in retry plugin (``qw.builtin.retries``).
    :param options: settings for other plugins, JSON values under dotted names owned by
        each plugin (``qw run -o slowjobs.seconds=2``); plugins read them in
        ``qw_plugins_loaded``.
    """

    modules: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    entry_points: bool = True
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    options: Mapping[str, JSON] = attrs.field(factory=dict, converter=_options)


def make_plugin_manager(
    config: PluginConfig | None = None, *, extra: Iterable[object] = ()
) -> pluggy.PluginManager:
    """Build a plugin manager for one process.

    Order: add the specs, block disabled names, register the built-ins, load the ``qw``
    entry points, register ``config.modules`` and ``extra`` plugin objects, then
    ``check_pending()`` so an implementation of a hook that does not exist is an error,
    and finally tell every plugin the settings (``qw_plugins_loaded``).

    :raises PluginError: a module cannot be imported or implements an unknown hook.
    """
    config = config or PluginConfig()
    _check_blocked_names(config)
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in config.disabled:
        pm.set_blocked(name)
    for name, where in DEFAULT_PLUGINS:
        if not pm.is_blocked(name):
            pm.register(_builtin(where, config), name=name)
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
    for hook in ESSENTIAL_HOOKS:
        if not getattr(pm.hook, hook).get_hookimpls():
            raise PluginError(f"no plugin implements {hook}: a built-in one was blocked with no replacement")
    pm.hook.qw_plugins_loaded(config=config)
    return pm


def _check_blocked_names(config: PluginConfig) -> None:
    known = {name for name, _ in DEFAULT_PLUGINS} | set(config.modules)
    if config.entry_points:
        known |= {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    unknown = [name for name in config.disabled if name not in known]
    if unknown:
        raise PluginError(
            f"cannot block {', '.join(map(repr, unknown))}: no such plugin (see 'qw plugins'; "
            f"built-in: {', '.join(name for name, _ in DEFAULT_PLUGINS)})"
        )


def _builtin(where: str, config: PluginConfig) -> object:
    """The built-in plugin ``module`` or ``module:factory`` (called with ``config``) names."""
    module_name, _, factory = where.partition(":")
    plugin: Any = importlib.import_module(module_name)
    if not factory:
        return plugin
    for attr in factory.split("."):
        plugin = getattr(plugin, attr)
    return plugin(config)


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
    except Exception as exc:  # the plugin's own code raised at import time
        raise PluginError(
            f"plugin module {module_name!r}: importing it raised {type(exc).__name__}: {exc}"
        ) from exc


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
