"""``qw backends`` and ``qw plugins`` (the installed tiny distributions are in test_cli_dists)."""

from __future__ import annotations

import json

import pytest
from cli_support import DEAD_URL, assert_one_line_error, invoke


def test_backends_lists_entry_points_without_importing_them() -> None:
    result = invoke("backends")
    assert result.exit_code == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()}
    assert rows["NAME"] == ["NAME", "DISTRIBUTION", "VERSION", "CLASS"]
    assert rows["memory"][1:] == ["qw-core", "1.0.0.dev0", "qw_core.memory:MemoryBroker"]
    assert rows["redis"][1:] == ["qw-redis", "1.0.0.dev0", "qw_redis.broker:RedisBroker"]


def test_backends_json() -> None:
    rows = json.loads(invoke("backends", "--json").stdout)
    assert {
        "name": "memory",
        "distribution": "qw-core",
        "version": "1.0.0.dev0",
        "class": "qw_core.memory:MemoryBroker",
    } in rows


def test_plugins_lists_the_builtins_with_their_hooks() -> None:
    result = invoke("plugins")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "HOOKS"]
    names = [line.split()[0] for line in lines[1:]]
    assert names[:5] == [
        "qw.builtin.targets",
        "qw.builtin.runner",
        "qw.builtin.retries",
        "qw.builtin.failures",
        "qw.builtin.logging",
    ]
    assert "(built-in)" in lines[1]
    assert lines[1].rstrip().endswith("qw_load_target")


def test_plugins_json_with_a_module_plugin() -> None:
    rows = json.loads(invoke("plugins", "-p", "qwtest_targets.plugin", "--json").stdout)
    (row,) = [r for r in rows if r["name"] == "qwtest_targets.plugin"]
    assert row == {
        "name": "qwtest_targets.plugin",
        "distribution": None,
        "version": None,
        "hooks": ["qw_job_finished", "qw_job_started", "qw_job_succeeded"],
    }


def test_plugins_from_environment_space_or_comma_separated() -> None:
    for value in ("qwtest_targets.plugin,qwtest_plugin", "qwtest_targets.plugin  qwtest_plugin"):
        rows = json.loads(invoke("plugins", "--json", env={"QW_PLUGINS": value}).stdout)
        assert {"qwtest_targets.plugin", "qwtest_plugin"} <= {r["name"] for r in rows}


def test_flag_wins_over_environment_for_plugins() -> None:
    rows = json.loads(
        invoke("plugins", "--json", "-p", "qwtest_plugin", env={"QW_PLUGINS": "no_such_module"}).stdout
    )
    assert "qwtest_plugin" in {r["name"] for r in rows}


def test_unimportable_plugin() -> None:
    assert_one_line_error(
        invoke("plugins", "-p", "no_such_plugin_module"),
        "plugin module 'no_such_plugin_module' cannot be imported",
    )


@pytest.mark.parametrize("command", [["plugins"], ["enqueue", "--url", DEAD_URL, "{}"]])
def test_a_plugin_that_raises_at_import_is_named(command: list[str]) -> None:
    """It was 'unexpected RuntimeError: ...', with no word of which module raised."""
    assert_one_line_error(
        invoke(*command, "-p", "qwtest_targets.broken_import"),
        "plugin module 'qwtest_targets.broken_import': importing it raised RuntimeError",
        "this module is broken on purpose",
    )


def test_no_name_blocks_a_plugin() -> None:
    rows = json.loads(invoke("plugins", "--json", "-p", "no:qw.builtin.logging").stdout)
    names = [row["name"] for row in rows]
    assert "qw.builtin.logging" not in names
    assert "qw.builtin.runner" in names


def test_blocking_an_unknown_plugin_is_one_line() -> None:
    assert_one_line_error(
        invoke("plugins", "-p", "no:qw.builtin.loging"), "cannot block 'qw.builtin.loging': no such plugin"
    )
