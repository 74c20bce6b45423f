"""The plugin manager factory and the hook specifications."""

from __future__ import annotations

import inspect

import pytest

from qw_core import PluginError, hookimpl, hookspecs, make_plugin_manager
from qw_core.models import Decision, Failure, Job, WorkerInfo
from qw_core.plugins import DEFAULT_PLUGINS, PluginConfig, describe_plugins

NO_EP = PluginConfig(entry_points=False)
WORKER = WorkerInfo(name="m.1", manager="m", pid=1)


def spec_functions() -> list[object]:
    return [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("qw_")]


def test_every_builtin_is_registered_under_its_name() -> None:
    pm = make_plugin_manager(NO_EP)
    for name, _module in DEFAULT_PLUGINS:
        assert pm.get_plugin(name) is not None


def test_a_builtin_can_be_blocked_by_name() -> None:
    pm = make_plugin_manager(PluginConfig(entry_points=False, disabled=("qw.builtin.logging",)))
    assert pm.get_plugin("qw.builtin.logging") is None
    assert pm.is_blocked("qw.builtin.logging")


def test_a_misspelt_hook_is_a_startup_error() -> None:
    class Typo:
        @hookimpl
        def qw_job_startd(self, job: Job) -> None: ...

    with pytest.raises(PluginError, match="qw_job_startd"):
        make_plugin_manager(NO_EP, extra=[Typo()])


def test_an_unimportable_plugin_module_is_one_clear_error() -> None:
    with pytest.raises(PluginError, match="'no_such_plugin_mod' cannot be imported"):
        make_plugin_manager(PluginConfig(entry_points=False, modules=("no_such_plugin_mod",)))


def test_plugin_module_by_name_is_registered_and_described() -> None:
    pm = make_plugin_manager(PluginConfig(entry_points=False, modules=("qwtest_targets.plugin",)))
    rows = {row["name"]: row for row in describe_plugins(pm)}
    assert rows["qwtest_targets.plugin"]["hooks"] == ["qw_job_finished", "qw_job_started", "qw_job_succeeded"]
    assert rows["qw.builtin.runner"]["hooks"] == ["qw_job_run"]


def test_default_failure_decision_is_fail() -> None:
    pm = make_plugin_manager(NO_EP)
    exc = ValueError("x")
    decision = pm.hook.qw_job_failed(
        job=Job.new({}), worker=WORKER, exc=exc, failure=Failure.from_exception(exc, worker="m.1")
    )
    assert decision == Decision.fail()


def test_a_user_failure_decision_overrides_the_default() -> None:
    class AlwaysRetry:
        @hookimpl
        def qw_job_failed(
            self, job: Job, worker: WorkerInfo, exc: BaseException, failure: Failure
        ) -> Decision:
            return Decision.retry(2.0)

    pm = make_plugin_manager(NO_EP, extra=[AlwaysRetry()])
    exc = ValueError("x")
    failure = Failure.from_exception(exc, worker="m.1")
    assert pm.hook.qw_job_failed(job=Job.new({}), worker=WORKER, exc=exc, failure=failure) == Decision.retry(
        2.0
    )


@pytest.mark.parametrize("spec", spec_functions(), ids=lambda f: f.__name__)  # type: ignore[attr-defined]
def test_every_hook_is_documented(spec: object) -> None:
    """Each hookspec says when it fires, in which process, and what it returns (datasette's check)."""
    doc = inspect.getdoc(spec) or ""
    assert "Fires" in doc, "say when it fires"
    assert "process" in doc, "say in which process it fires"
    params = list(inspect.signature(spec).parameters)  # type: ignore[arg-type]
    for param in params:
        assert f":param {param}:" in doc, f"document parameter {param}"
    if getattr(spec, "qw_spec", {}).get("firstresult"):
        assert ":return:" in doc
        assert "first non-None" in doc


def test_hook_names_carry_the_prefix() -> None:
    names = [f.__name__ for f in spec_functions()]  # type: ignore[attr-defined]
    assert len(names) == 15
    assert all(name.startswith("qw_") for name in names)


def test_blocking_an_unknown_name_is_an_error() -> None:
    # A typo must not leave the plugin it meant running unnoticed.
    with pytest.raises(PluginError, match=r"cannot block 'qw.builtin.loging': no such plugin"):
        make_plugin_manager(PluginConfig(entry_points=False, disabled=("qw.builtin.loging",)))


def test_the_runner_is_blocked_only_with_a_replacement() -> None:
    # Without any qw_job_run, a job would "succeed" with its target never called.
    blocked = PluginConfig(entry_points=False, disabled=("qw.builtin.runner",))
    with pytest.raises(PluginError, match="no plugin implements qw_job_run"):
        make_plugin_manager(blocked)

    class Runner:
        @hookimpl
        def qw_job_run(self, job: Job, worker: WorkerInfo, target: object) -> bool:
            return True

    pm = make_plugin_manager(blocked, extra=[Runner()])
    assert pm.get_plugin("qw.builtin.runner") is None
