"""Settling a job whose run failed: ask the plugins what to do, then do it. Written once.

A failed run is settled in two places: in the worker, when the target raised, and in the
manager, when a job overran its time limit and its worker was killed. Both go through
:func:`decide` (the ``qw_job_failed`` plugins choose: retry, fail or drop) and
:func:`apply` (one guarded broker call), so the two can never disagree on what a decision
means, and :func:`notify` fires the notification hooks without letting a plugin's bug
stop the process that settles.

The rules: no answer (every failure plugin blocked) means *fail*, never *drop*, so a job
is never silently lost; a plugin that raises while deciding is logged and counts as no
answer; every broker call is guarded by the worker's held list, so settling a job that a
reaper handed to someone else meanwhile changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import pluggy

from qw_core.broker import Consumer
from qw_core.models import Action, Decision, Failure, Job, Outcome, WorkerInfo
from qw_core.policy import FailedLimits

log = logging.getLogger("qw.settle")

#: The outcome each decision leads to.
OUTCOMES = {Action.RETRY: Outcome.RETRIED, Action.FAIL: Outcome.FAILED, Action.DROP: Outcome.DROPPED}


def decide(
    hook: pluggy.HookRelay, job: Job, worker: WorkerInfo, exc: BaseException, failure: Failure
) -> Decision:
    """What the ``qw_job_failed`` plugins decide for ``job``; *fail* when none answers.

    Never raises: a plugin that raises, or answers with something that is not a
    :class:`~qw_core.models.Decision`, is logged, and its answer counts as none.
    """
    try:
        decision: object = hook.qw_job_failed(job=job, worker=worker, exc=exc, failure=failure)
    except BaseException:  # a plugin's SystemExit too: a plugin bug, logged
        log.exception("a qw_job_failed plugin raised on job %s; the job is failed", job.id)
        return Decision.fail()
    if decision is None:
        return Decision.fail()
    if not isinstance(decision, Decision):
        log.error(
            "a qw_job_failed plugin answered %r, not a Decision, for job %s; it is failed", decision, job.id
        )
        return Decision.fail()
    return decision


def apply(
    broker: Consumer, *, worker: str, job: Job, decision: Decision, failure: Failure, limits: FailedLimits
) -> Outcome:
    """Carry out ``decision`` for ``job``, held by ``worker``, in one guarded broker call.

    Idempotent: a job the worker no longer holds (settled already, or recovered and handed
    on) is left alone, so a caller may retry this after an error.
    """
    if decision.action is Action.RETRY:
        broker.retry_job(worker=worker, job=job, delay=decision.delay)
    elif decision.action is Action.DROP:
        broker.finish_jobs(worker=worker, job_ids=[job.id])
    else:
        broker.fail_job(worker=worker, job=job, failure=failure, limits=limits)
    return OUTCOMES[decision.action]


def notify(caller: Any, **kwargs: Any) -> None:
    """Call the notification hook ``caller`` (skipped when nobody implements it: a pluggy
    call costs microseconds even with nothing to call); a plugin that raises is logged
    and never stops the worker or manager."""
    if not caller.get_hookimpls():
        return
    try:
        caller(**kwargs)
    except BaseException:  # a plugin's SystemExit too: a plugin bug, logged
        log.exception("a %s plugin raised; going on", caller.name)
