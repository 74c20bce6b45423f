"""The default failure policy: keep a failed job in the failed-job registry.

Registered ``trylast``, so a retry plugin (or a user's) decides first; when nobody else
has an opinion the job is failed and kept, never silently dropped.
"""

from __future__ import annotations

from qw_core.models import Decision, Failure, Job, WorkerInfo
from qw_core.plugins import hookimpl


@hookimpl(trylast=True)
def qw_job_failed(job: Job, worker: WorkerInfo, exc: BaseException, failure: Failure) -> Decision:
    return Decision.fail()
