"""qw: a manager process, worker processes, pluggable backends and pluggy hooks.

The public API of the core. Plugin authors write ``from qw_core import hookimpl``;
backend authors subclass :class:`Broker` and run :mod:`qw_core.testing`'s contract suite.
"""

from __future__ import annotations

from qw_core.broker import Broker, BrokerFactory, Capabilities, Reaped
from qw_core.errors import (
    BackendError,
    BackendNotFound,
    BrokerUnavailable,
    ConfigurationError,
    InvalidJob,
    InvalidName,
    JobCrashed,
    JobTimeout,
    JobTooLarge,
    PluginError,
    QwError,
    Retry,
    TargetAttributeNotFound,
    TargetError,
    TargetModuleNotFound,
    TargetNotCallable,
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
    WorkerInfo,
)
from qw_core.plugins import PluginConfig, hookimpl, make_plugin_manager
from qw_core.policy import FailedLimits, RetryPolicy

__version__ = "1.0.0.dev0"

__all__ = [
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
    "FailedJob",
    "FailedLimits",
    "Failure",
    "InvalidJob",
    "InvalidName",
    "Job",
    "JobCrashed",
    "JobTimeout",
    "JobTooLarge",
    "ManagerInfo",
    "Outcome",
    "PluginConfig",
    "PluginError",
    "QwError",
    "Reaped",
    "Retry",
    "RetryPolicy",
    "TargetAttributeNotFound",
    "TargetError",
    "TargetModuleNotFound",
    "TargetNotCallable",
    "WorkerInfo",
    "__version__",
    "hookimpl",
    "make_plugin_manager",
]
