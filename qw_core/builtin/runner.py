"""The built-in job runner: call ``target(job_id, job_data)``, as the original qw did."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qw_core.models import Job, WorkerInfo
from qw_core.plugins import hookimpl

#: What the runner returns for a target that returned ``None``, so pluggy's firstresult
#: call stops here instead of reporting "no result".
RAN = object()


@hookimpl(trylast=True)
def qw_job_run(job: Job, worker: WorkerInfo, target: Callable[..., Any]) -> object:
    result = target(job.id, job.data)
    return RAN if result is None else result
