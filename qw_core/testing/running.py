"""Running an application's queued jobs in its own tests: :func:`run_jobs`.

A test queues jobs the way the application does, then calls ``run_jobs(broker, target)``
and asserts on what came back. The jobs go through a real :class:`~qw_core.worker.Worker`
in the calling thread, with the same plugins ``qw run`` loads (retries, the failed
registry, the user's hooks), so a test sees what production would: a job that raises is
retried as the policy says and ends in the failed registry, and every hook fires. Only
waiting is left out: a retry's back-off is skipped unless asked for, so a test of three
retries takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from qw_core.broker import Broker
from qw_core.errors import QwError
from qw_core.models import Action, Decision, Failure, Job, Outcome, WorkerInfo
from qw_core.plugins import PluginConfig, hookimpl, make_plugin_manager
from qw_core.results import DEFAULT_RESULT_TTL
from qw_core.worker import Worker

#: The manager name :func:`run_jobs` works under unless told otherwise.
TEST_MANAGER = "test"


@attrs.frozen
class Ran:
    """One run of a job by :func:`run_jobs`.

    :param job: the job as it ran (``job.attempts`` counts its earlier failed runs).
    :param outcome: how the run ended: succeeded, retried, failed (into the failed
        registry) or dropped.
    :param error: what the target raised, or ``None``.
    :param duration: seconds the target ran.
    """

    job: Job
    outcome: Outcome
    error: BaseException | None
    duration: float

    @property
    def succeeded(self) -> bool:
        return self.outcome is Outcome.SUCCEEDED


class TooManyRuns(QwError):
    """:func:`run_jobs` ran more jobs than its ``max_runs`` (a job that queues itself again
    for ever, say); it stopped, and the jobs not run yet are still queued."""


class _Recorder:
    """A plugin that notes each run for :func:`run_jobs`, and skips retry back-offs."""

    def __init__(self, *, retry_delays: bool, max_runs: int) -> None:
        self.runs: list[Ran] = []
        self.retry_delays = retry_delays
        self.max_runs = max_runs
        self.worker: Worker | None = None
        self._errors: dict[str, BaseException] = {}

    @hookimpl(wrapper=True)
    def qw_job_failed(self, job: Job, worker: WorkerInfo, exc: BaseException, failure: Failure) -> Any:
        self._errors[job.id] = exc
        decision = yield
        if isinstance(decision, Decision) and decision.action is Action.RETRY and not self.retry_delays:
            return Decision.retry(0.0)
        return decision

    @hookimpl
    def qw_job_finished(self, job: Job, worker: WorkerInfo, outcome: Outcome, duration: float) -> None:
        self.runs.append(Ran(job, outcome, self._errors.pop(job.id, None), duration))
        if len(self.runs) >= self.max_runs and self.worker is not None:
            self.worker.request_stop()


def run_jobs(
    broker: Broker,
    target: str | Callable[..., Any],
    *,
    plugins: PluginConfig | None = None,
    manager: str = TEST_MANAGER,
    retry_delays: bool = False,
    max_runs: int = 10_000,
    queues: Sequence[str] | None = None,
    result_ttl: float = DEFAULT_RESULT_TTL,
) -> list[Ran]:
    """Run the jobs queued on ``broker`` through a real worker until none is left to take.

    Takes from the worker's own list, ``manager``'s queue and the shared queue (or the
    named ``queues``, in that order of priority), as a worker of ``qw run -n MANAGER
    [--queue NAME]...`` would, and runs each job through the hooks of
    ``plugins`` (by default what ``qw run`` loads, installed plugins included). Retries
    run at once unless ``retry_delays``; jobs queued with a delay run if they are due.
    What a job returns, or that it succeeded, is kept ``result_ttl`` seconds (as with
    ``qw run --result-ttl``).

    :returns: each run, in the order they ran (a retried job appears once per run).
    :raises TooManyRuns: more than ``max_runs`` runs.
    """
    recorder = _Recorder(retry_delays=retry_delays, max_runs=max_runs)
    pm = make_plugin_manager(plugins or PluginConfig(), extra=[recorder])
    worker = Worker(
        broker,
        target,
        manager=manager,
        name=f"{manager}.run-jobs",
        hook=pm.hook,
        burst=True,
        queues=queues,
        result_ttl=result_ttl,
    )
    recorder.worker = worker
    worker.run()
    left = [broker.queued_count(manager), *(broker.queued_count(queue=queue) for queue in worker.queues)]
    if len(recorder.runs) >= max_runs and any(left):
        raise TooManyRuns(f"more than {max_runs} runs; the rest of the jobs are still queued")
    return recorder.runs
