"""JobRunner calling ``qw_job_run``: the built-in runner alone is called as pluggy would
call it, without pluggy's call (on the path of every job an idle worker is handed); any
plugin that runs jobs, registered at any time, is called through pluggy as before."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pluggy
import pytest

from qw_core import Job, PluginConfig, hookimpl, make_plugin_manager
from qw_core.execution import JobRunner
from qw_core.models import WorkerInfo

INFO = WorkerInfo(name="m.1", manager="m", pid=os.getpid())


def runner_for(pm: pluggy.PluginManager, target: Callable[..., Any]) -> JobRunner:
    return JobRunner(pm.hook, target, INFO, None, job_timeout=None, kill_after=0.0)


@pytest.fixture
def hooks_called(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the hooks called through pluggy from here on."""
    called: list[str] = []
    call = pluggy.HookCaller.__call__

    def recording(self: pluggy.HookCaller, **kwargs: Any) -> Any:
        called.append(self.name)
        return call(self, **kwargs)

    monkeypatch.setattr(pluggy.HookCaller, "__call__", recording)
    return called


def test_the_built_in_runner_alone_runs_the_target_without_pluggys_call(hooks_called: list[str]) -> None:
    pm = make_plugin_manager(PluginConfig(entry_points=False))
    seen: list[tuple[str, Any]] = []

    def target(job_id: str, job_data: Any) -> int:
        seen.append((job_id, job_data))
        return 7

    job = Job.new({"n": 1})
    done = runner_for(pm, target).run(job, 0, 1)
    assert seen == [(job.id, {"n": 1})]
    assert (done.error, done.result) == (None, "7")
    assert "qw_job_run" not in hooks_called


class Wrapping:
    """A runner plugin that runs the target itself and says so."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    @hookimpl(tryfirst=True)
    def qw_job_run(self, job: Job, worker: Any, target: Callable[..., Any]) -> object:
        self.ran.append(job.id)
        return {"wrapped": target(job.id, job.data)}


def test_a_runner_plugin_registered_after_the_runner_was_made_runs_the_job(hooks_called: list[str]) -> None:
    pm = make_plugin_manager(PluginConfig(entry_points=False))
    runner = runner_for(pm, lambda job_id, job_data: job_data["n"])
    plugin = Wrapping()
    pm.register(plugin)
    job = Job.new({"n": 2})
    done = runner.run(job, 0, 1)
    assert plugin.ran == [job.id]
    assert done.result == '{"wrapped":2}'
    assert "qw_job_run" in hooks_called
