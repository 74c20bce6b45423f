"""``qw backends`` and ``qw plugins``: what is installed, and where it came from.

``qw backends`` reads the ``qw.backends`` entry points without importing any backend (a
broken backend cannot stop the listing). ``qw plugins`` builds the plugin manager exactly
as ``qw run`` would (built-ins, ``qw`` entry points, ``-p`` modules) and reports what it
registered, so "is my plugin loaded?" has a direct answer.
"""

from __future__ import annotations

import click

from qw_cli.options import json_option, plugin_option, split_plugin_names
from qw_cli.output import echo_json, echo_table
from qw_core.backends import available_backends
from qw_core.plugins import DEFAULT_PLUGINS, PluginConfig, describe_plugins, make_plugin_manager


@click.command(short_help="List installed backends.")
@json_option
def backends(*, as_json: bool) -> None:
    """List installed backends: name, distribution, version, class."""
    rows: list[dict[str, str | None]] = []
    for name, ep in sorted(available_backends().items()):
        dist = ep.dist
        rows.append(
            {
                "name": name,
                "distribution": dist.name if dist is not None else None,
                "version": dist.version if dist is not None else None,
                "class": ep.value,
            }
        )
    if as_json:
        echo_json(rows)
    else:
        echo_table(["name", "distribution", "version", "class"], [list(row.values()) for row in rows])


@click.command(short_help="List the plugins qw run would load.")
@plugin_option
@json_option
def plugins(*, plugins: tuple[str, ...], as_json: bool) -> None:
    """List the plugins qw run would load: name, distribution, version, hooks.

    Built-in plugins come first, then those installed under the 'qw' entry points, then
    -p/QW_PLUGINS modules.
    """
    modules, blocked = split_plugin_names(plugins)
    rows = describe_plugins(make_plugin_manager(PluginConfig(modules=modules, disabled=blocked)))
    if as_json:
        echo_json(rows)
        return
    builtin = {name for name, _ in DEFAULT_PLUGINS}
    echo_table(
        ["name", "distribution", "version", "hooks"],
        [
            [
                str(row["name"]),
                "(built-in)" if row["name"] in builtin else _cell(row["distribution"]),
                _cell(row["version"]),
                _hooks(row["hooks"]),
            ]
            for row in rows
        ],
    )


def _cell(value: object) -> str | None:
    return None if value is None else str(value)


def _hooks(value: object) -> str:
    return ", ".join(str(hook) for hook in value) if isinstance(value, list) else ""
