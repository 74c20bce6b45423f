"""Every hook qw calls, and nothing else.

Plugins implement these with ``from qw_core import hookimpl``. Notifications are named in
the past tense or as ``_starting``/``_stopping``; decisions are verbs. All names carry the ``qw_`` prefix,
so :meth:`pluggy.PluginManager.check_pending` turns a misspelt hook into a start-up error.

Hooks run in the process that fires them: manager hooks in the manager process, worker
and job hooks in each worker process. A plugin therefore holds no state shared across
processes; it uses the broker or its own store for that (see the metrics plugin,
:mod:`qw_core.contrib.prometheus`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

from qw_core.models import Decision, Failure, Job, ManagerInfo, Outcome, WorkerInfo

if TYPE_CHECKING:
    from qw_core.broker import Broker
    from qw_core.plugins import PluginConfig

hookspec = pluggy.HookspecMarker("qw")

# ---------------------------------------------------------------------------------------
# Loading (any process)
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def qw_load_target(spec: str) -> Callable[..., Any] | None:
    """Turn a target string into the callable every job is handed to.

    Fires in each worker process (and once in the manager to check the target early),
    for target strings only; a callable given to the manager passes through untouched.

    :param spec: the target string as the user wrote it.
    :return: the callable; stops at the first non-None result. ``None`` means "not a form
        I understand", so the next plugin (finally the built-in ``module:attr`` and
        ``module.attr`` loader) tries.
    """


@hookspec
def qw_plugins_loaded(config: PluginConfig) -> None:
    """Every plugin of this process is registered; read your settings.

    Fires once in every process that builds a plugin manager (the manager, each worker,
    ``qw enqueue``), at the end of :func:`~qw_core.plugins.make_plugin_manager`.

    :param config: what was loaded and the settings: ``config.options`` holds plugin
        settings under dotted names each plugin owns (``qw run -o NAME=VALUE``),
        ``config.retry`` the retry policy.
    """


@hookspec
def qw_job_queued(job: Job) -> None:
    """A job was queued.

    Fires in the process that queued it, after the broker accepted it.

    :param job: the job as stored.
    """


# ---------------------------------------------------------------------------------------
# Manager process
# ---------------------------------------------------------------------------------------


@hookspec
def qw_manager_starting(manager: ManagerInfo, broker: Broker) -> None:
    """The manager is about to start its workers.

    Fires once in the manager process, before any worker process exists: the place to
    prepare what workers inherit (environment variables, a shared directory).

    :param manager: who the manager is.
    :param broker: the manager's broker, for reading queues (a plugin reading from another
        thread opens its own with ``broker.factory()()``, as one broker serves one thread).
    """


@hookspec
def qw_manager_started(manager: ManagerInfo) -> None:
    """The manager registered itself and its first workers were started.

    Fires once in the manager process.

    :param manager: who the manager is.
    """


@hookspec
def qw_manager_stopping(manager: ManagerInfo) -> None:
    """The manager is about to stop its workers and deregister.

    Fires once in the manager process, before workers are asked to stop.

    :param manager: who the manager is.
    """


@hookspec
def qw_worker_died(manager: ManagerInfo, worker: str, exitcode: int | None, recovered: int) -> None:
    """A worker process exited without being asked to (or was killed because its job ran
    past its time limit); the manager will replace it.

    Fires in the manager process, after the jobs the worker held were put back (a job
    that overran is failed, kind ``"timeout"``; a job its workers kept dying on, kind
    ``"crashed"``).

    :param manager: the worker's manager.
    :param worker: the dead worker's name.
    :param exitcode: its exit code (negative: killed by that signal), if known.
    :param recovered: how many held jobs were put back on their queues.
    """


@hookspec
def qw_worker_reaped(manager: ManagerInfo, worker: str, requeued: int, failed: int) -> None:
    """This manager's reaper found a dead worker, and recovered it: its heartbeat had
    lapsed, or (a backend with ``capabilities.session_liveness``) its process and its
    manager's were gone.

    Fires in the manager process, on its reaper thread, after the jobs were moved. The
    worker may belong to any manager (one that died, or this one, if it was paused).

    :param manager: the manager whose reaper did it.
    :param worker: the dead worker's name (``<its manager>.<pid>``).
    :param requeued: how many held jobs were put back on their queues.
    :param failed: how many were failed instead (kind ``"crashed"``: put back too often).
    """


# ---------------------------------------------------------------------------------------
# Worker process
# ---------------------------------------------------------------------------------------


@hookspec
def qw_worker_started(worker: WorkerInfo) -> None:
    """The worker registered itself and is about to take its first job.

    Fires once in the worker process.

    :param worker: who the worker is.
    """


@hookspec
def qw_worker_stopping(worker: WorkerInfo) -> None:
    """The worker took its last job and is about to deregister and exit.

    Fires once in the worker process, whether it was asked to stop or lost its manager.

    :param worker: who the worker is.
    """


@hookspec
def qw_job_started(job: Job, worker: WorkerInfo) -> None:
    """A job is about to run.

    Fires in the worker process, before :func:`qw_job_run`.

    :param job: the job; ``job.attempt`` is the number of this run.
    :param worker: the worker running it.
    """


@hookspec(firstresult=True)
def qw_job_run(job: Job, worker: WorkerInfo, target: Callable[..., Any]) -> object | None:
    """Run the job's target.

    Fires in the worker process. The built-in implementation calls
    ``target(job.id, job.data)``; wrap it with ``@hookimpl(wrapper=True)`` to time, trace
    or put a context around a job (as pytest's logging plugin wraps test calls).

    :param job: the job to run.
    :param worker: the worker running it.
    :param target: the callable the manager was started with.
    :return: the target's return value (kept by nobody: results are the target's own
        business); stops at the first non-None result. An exception is the job's failure.
    """


@hookspec
def qw_job_succeeded(job: Job, worker: WorkerInfo, duration: float) -> None:
    """A job's target returned.

    Fires in the worker process, before the job is finished in the broker.

    :param job: the job.
    :param worker: the worker that ran it.
    :param duration: seconds the target took.
    """


@hookspec(firstresult=True)
def qw_job_failed(job: Job, worker: WorkerInfo, exc: BaseException, failure: Failure) -> Decision | None:
    """A job's target raised; decide what happens to the job.

    Fires in the worker process, before anything is written; for a job that ran past its
    time limit, in the manager process, after it killed the worker (``exc`` is a
    :class:`~qw_core.errors.JobTimeout`, ``failure.kind`` is ``"timeout"``).

    :param job: the job; ``job.attempts`` counts the runs before this one.
    :param worker: the worker that ran it.
    :param exc: the exception the target raised.
    :param failure: ``exc`` described for the failed-job registry.
    :return: a :class:`~qw_core.models.Decision`: retry (with a delay), fail (keep it in
        the failed-job registry) or drop; stops at the first non-None result. The
        built-in retry plugin (``trylast``) retries as its policy allows and otherwise
        returns ``None``; the built-in default after it (``trylast``) fails the job, so
        nothing is silently dropped.
    """


@hookspec
def qw_job_finished(job: Job, worker: WorkerInfo, outcome: Outcome, duration: float) -> None:
    """A job's run is over and its outcome is decided.

    Fires in the worker process, once per run, whatever the outcome (in the manager
    process for a job that ran past its time limit; ``duration`` is then the limit). A failed, retried
    or dropped job is already settled in the broker; a succeeded one is finished together
    with the worker's next take (one round trip for both).

    :param job: the job.
    :param worker: the worker that ran it.
    :param outcome: succeeded, failed, retried or dropped.
    :param duration: seconds the target took.
    """
