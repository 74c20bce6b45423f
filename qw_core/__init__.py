"""qw: a manager process, worker processes, pluggable backends and pluggy hooks.

The public API of the core. Plugin authors write ``from qw_core import hookimpl``;
backend authors subclass :class:`Broker` and run :mod:`qw_core.testing`'s contract suite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qw_core.broker import Broker, BrokerFactory, Capabilities, Reaped
    from qw_core.errors import (
        BackendError,
        BackendNotFound,
        BrokerUnavailable,
        ConfigurationError,
        DuplicateTask,
        InvalidJob,
        InvalidName,
        InvalidResult,
        InvalidTaskCall,
        JobCrashed,
        JobsNotReplicated,
        JobTimeout,
        JobTooLarge,
        NoResult,
        PermanentFailure,
        PluginError,
        QwError,
        Retry,
        TargetAttributeNotFound,
        TargetError,
        TargetModuleNotFound,
        TargetNotCallable,
        TargetNotRun,
        UniqueJobsUnsupported,
        UnknownTask,
        WorkerRunning,
    )
    from qw_core.models import (
        JSON,
        Action,
        Decision,
        FailedJob,
        Failure,
        Job,
        ManagerInfo,
        Outcome,
        ScheduleInfo,
        TickResult,
        TickState,
        WorkerInfo,
    )
    from qw_core.plugins import PluginConfig, hookimpl, make_plugin_manager
    from qw_core.policy import FailedLimits, RetryPolicy
    from qw_core.results import JobResult
    from qw_core.schedules import Schedule
    from qw_core.tasks import Router, Task, TaskHandle
    from qw_core.unique import Queued, Unique

#: Each public name and the module it comes from: imported on first use (PEP 562), so
#: ``import qw_core`` (which ``qw --version`` and every error message need) costs nothing
#: and a command imports only what it uses.
_EXPORTS = {
    "Action": "qw_core.models",
    "BackendError": "qw_core.errors",
    "BackendNotFound": "qw_core.errors",
    "Broker": "qw_core.broker",
    "BrokerFactory": "qw_core.broker",
    "BrokerUnavailable": "qw_core.errors",
    "Capabilities": "qw_core.broker",
    "ConfigurationError": "qw_core.errors",
    "Decision": "qw_core.models",
    "DuplicateTask": "qw_core.errors",
    "DEFAULT_QUEUE": "qw_core.models",
    "FailedJob": "qw_core.models",
    "FailedLimits": "qw_core.policy",
    "Failure": "qw_core.models",
    "hookimpl": "qw_core.plugins",
    "InvalidJob": "qw_core.errors",
    "InvalidName": "qw_core.errors",
    "InvalidResult": "qw_core.errors",
    "JobResult": "qw_core.results",
    "NoResult": "qw_core.errors",
    "InvalidTaskCall": "qw_core.errors",
    "Job": "qw_core.models",
    "JobCrashed": "qw_core.errors",
    "JobTimeout": "qw_core.errors",
    "JobsNotReplicated": "qw_core.errors",
    "JobTooLarge": "qw_core.errors",
    "JSON": "qw_core.models",
    "make_plugin_manager": "qw_core.plugins",
    "ManagerInfo": "qw_core.models",
    "Outcome": "qw_core.models",
    "PluginConfig": "qw_core.plugins",
    "PermanentFailure": "qw_core.errors",
    "PluginError": "qw_core.errors",
    "QwError": "qw_core.errors",
    "Reaped": "qw_core.broker",
    "Retry": "qw_core.errors",
    "RetryPolicy": "qw_core.policy",
    "Router": "qw_core.tasks",
    "Schedule": "qw_core.schedules",
    "ScheduleInfo": "qw_core.models",
    "TargetAttributeNotFound": "qw_core.errors",
    "TargetError": "qw_core.errors",
    "TargetModuleNotFound": "qw_core.errors",
    "TargetNotCallable": "qw_core.errors",
    "TargetNotRun": "qw_core.errors",
    "Task": "qw_core.tasks",
    "TaskHandle": "qw_core.tasks",
    "TickResult": "qw_core.models",
    "TickState": "qw_core.models",
    "UnknownTask": "qw_core.errors",
    "Queued": "qw_core.unique",
    "Unique": "qw_core.unique",
    "UniqueJobsUnsupported": "qw_core.errors",
    "WorkerInfo": "qw_core.models",
    "WorkerRunning": "qw_core.errors",
}

__version__ = "1.0.0.dev0"

__all__ = [
    "DEFAULT_QUEUE",
    "JSON",
    "Action",
    "BackendError",
    "BackendNotFound",
    "Broker",
    "BrokerFactory",
    "BrokerUnavailable",
    "Capabilities",
    "ConfigurationError",
    "Decision",
    "DuplicateTask",
    "FailedJob",
    "FailedLimits",
    "Failure",
    "InvalidJob",
    "InvalidName",
    "InvalidResult",
    "InvalidTaskCall",
    "Job",
    "JobCrashed",
    "JobResult",
    "JobTimeout",
    "JobTooLarge",
    "JobsNotReplicated",
    "ManagerInfo",
    "NoResult",
    "Outcome",
    "PermanentFailure",
    "PluginConfig",
    "PluginError",
    "Queued",
    "QwError",
    "Reaped",
    "Retry",
    "RetryPolicy",
    "Router",
    "Schedule",
    "ScheduleInfo",
    "TargetAttributeNotFound",
    "TargetError",
    "TargetModuleNotFound",
    "TargetNotCallable",
    "TargetNotRun",
    "Task",
    "TaskHandle",
    "TickResult",
    "TickState",
    "Unique",
    "UniqueJobsUnsupported",
    "UnknownTask",
    "WorkerInfo",
    "WorkerRunning",
    "__version__",
    "hookimpl",
    "make_plugin_manager",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (see :data:`_EXPORTS`)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qw_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
