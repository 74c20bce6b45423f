"""Target loading: both string forms, callables, and a distinct error for each failure."""

from __future__ import annotations

from typing import Any

import pytest

from qw_core import hookimpl, make_plugin_manager
from qw_core.errors import (
    TargetAttributeNotFound,
    TargetError,
    TargetModuleNotFound,
    TargetNotCallable,
)
from qw_core.plugins import PluginConfig
from qw_core.targets import TargetLoader
from qwtest_targets import Targets, noop


@pytest.fixture
def loader() -> TargetLoader:
    return TargetLoader(make_plugin_manager(PluginConfig(entry_points=False)).hook)


def test_colon_form(loader: TargetLoader) -> None:
    assert loader.load("qwtest_targets:noop") is noop


def test_colon_form_with_attribute_path(loader: TargetLoader) -> None:
    assert loader.load("qwtest_targets:Targets.nested") is Targets.nested


def test_original_dotted_form(loader: TargetLoader) -> None:
    assert loader.load("qwtest_targets.noop") is noop


def test_dotted_form_into_a_submodule(loader: TargetLoader) -> None:
    from qwtest_targets import plugin

    assert loader.load("qwtest_targets.plugin.qw_job_started") is plugin.qw_job_started


def test_callable_passes_through(loader: TargetLoader) -> None:
    def target(job_id: str, job_data: Any) -> None: ...

    assert loader.load(target) is target


@pytest.mark.parametrize("spec", ["nosuchmodule_qw:func", "nosuchmodule_qw.func", "qwtest_targets.nosub:f"])
def test_missing_module(loader: TargetLoader, spec: str) -> None:
    with pytest.raises(TargetModuleNotFound, match="no module named") as info:
        loader.load(spec)
    assert isinstance(info.value, ImportError)


@pytest.mark.parametrize(
    "spec", ["qwtest_targets:missing", "qwtest_targets.missing", "qwtest_targets:Targets.nope"]
)
def test_missing_attribute(loader: TargetLoader, spec: str) -> None:
    with pytest.raises(TargetAttributeNotFound, match="has no attribute") as info:
        loader.load(spec)
    assert isinstance(info.value, AttributeError)


def test_not_callable(loader: TargetLoader) -> None:
    with pytest.raises(TargetNotCallable, match="not callable") as info:
        loader.load("qwtest_targets:NOT_CALLABLE")
    assert isinstance(info.value, TypeError)


def test_module_that_raises_while_importing(loader: TargetLoader) -> None:
    with pytest.raises(TargetError, match="RuntimeError: this module is broken on purpose"):
        loader.load("qwtest_targets.broken_import:f")


@pytest.mark.parametrize("spec", ["", "   ", "justaname", "module:", ":func"])
def test_malformed_strings(loader: TargetLoader, spec: str) -> None:
    with pytest.raises(TargetError):
        loader.load(spec)


def test_a_plugin_can_add_a_target_form() -> None:
    def echo(job_id: str, job_data: Any) -> None: ...

    class EchoForm:
        @hookimpl
        def qw_load_target(self, spec: str) -> Any:
            return echo if spec == "builtin:echo" else None

    pm = make_plugin_manager(PluginConfig(entry_points=False), extra=[EchoForm()])
    loader = TargetLoader(pm.hook)
    assert loader.load("builtin:echo") is echo
    assert loader.load("qwtest_targets:noop") is noop  # the built-in forms still work
