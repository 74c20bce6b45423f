"""Logs one readable line per lifecycle event to the ``qw`` logger.

A job line says the job id, the worker, the duration and the outcome; it is built lazily
(``%``-style arguments) so a disabled level costs almost nothing on the hot path.
"""

from __future__ import annotations

import logging

from qw_core.models import Failure, Job, ManagerInfo, Outcome, WorkerInfo
from qw_core.plugins import hookimpl

log = logging.getLogger("qw")


@hookimpl
def qw_manager_started(manager: ManagerInfo) -> None:
    workers = f"{manager.num_workers} worker{'' if manager.num_workers == 1 else 's'}"
    log.info("manager %s started with %s on %s", manager.name, workers, manager.backend)


@hookimpl
def qw_manager_stopping(manager: ManagerInfo) -> None:
    log.info("manager %s stopping", manager.name)


@hookimpl
def qw_worker_died(manager: ManagerInfo, worker: str, exitcode: int | None, recovered: int) -> None:
    log.warning(
        "worker %s died (exit code %s); %d held job(s) put back; starting a replacement",
        worker,
        exitcode,
        recovered,
    )


@hookimpl
def qw_worker_reaped(manager: ManagerInfo, worker: str, requeued: int, failed: int) -> None:
    log.log(
        logging.WARNING if requeued or failed else logging.INFO,
        "worker %s is dead (its heartbeat lapsed, or its process and its manager's are gone): "
        "%d held job(s) put back, %d failed as crashed",
        worker,
        requeued,
        failed,
    )


@hookimpl
def qw_worker_started(worker: WorkerInfo) -> None:
    log.debug("worker %s started", worker.name)


@hookimpl
def qw_worker_stopping(worker: WorkerInfo) -> None:
    log.debug("worker %s stopping", worker.name)


@hookimpl
def qw_job_failed(job: Job, worker: WorkerInfo, exc: BaseException, failure: Failure) -> None:
    log.warning(
        "job %s raised %s: %s",
        job.id,
        failure.exc_type,
        failure.message,
        exc_info=log.isEnabledFor(logging.DEBUG),
    )


@hookimpl
def qw_job_finished(job: Job, worker: WorkerInfo, outcome: Outcome, duration: float) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("job %s %s on %s in %.1f ms", job.id, outcome.value, worker.name, duration * 1000)
