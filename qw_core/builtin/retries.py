"""The built-in retry plugin: run a failed job again, with exponential back-off.

It answers ``qw_job_failed`` (``trylast``, so a user's plugin decides first) with
``Decision.retry(delay)`` while the job's policy allows another run, and with ``None``
otherwise, which leaves the job to the default failure plugin: into the failed-job
registry, never silently away.

The policy (:class:`~qw_core.policy.RetryPolicy`) comes from the manager's
:class:`~qw_core.plugins.PluginConfig` (``qw run --max-retries 5 --retry-backoff 2s``),
overridden field by field by the job's ``meta["retry"]``. Its default retries nothing, so
a manager nobody configured behaves as before: fail and keep.

A target may also ask for a retry by raising :class:`qw_core.Retry` (optionally with a
``delay`` in seconds, else the back-off applies). Such a request is honoured whatever the
exception lists say, but counts against ``max_retries`` like any other retry. A
:class:`~qw_core.errors.PermanentFailure` (an unknown task, a call that does not fit its
function, a result that is not JSON) is never retried: another run would fail the same.

Blocking it by name (``qw.builtin.retries``) turns retries off altogether.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from qw_core.errors import ConfigurationError, PermanentFailure, Retry
from qw_core.models import Decision, Failure, Job, WorkerInfo
from qw_core.plugins import hookimpl
from qw_core.policy import RETRY_META_KEY, RetryPolicy

if TYPE_CHECKING:
    from qw_core.plugins import PluginConfig

log = logging.getLogger("qw.retries")


class RetryPlugin:
    """Retries failed jobs as :attr:`policy` (and each job's overrides) allow.

    :param policy: the manager's policy.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    @classmethod
    def from_config(cls, config: PluginConfig) -> RetryPlugin:
        """The plugin for ``config.retry`` (the factory named in ``DEFAULT_PLUGINS``)."""
        return cls(config.retry)

    def policy_for(self, job: Job) -> RetryPolicy:
        """The manager's policy with the job's ``meta["retry"]`` applied.

        Invalid overrides are logged and ignored, so a typo in one job's metadata never
        turns into a job lost or retried forever.
        """
        overrides = job.meta.get(RETRY_META_KEY)
        if overrides is None:
            return self.policy
        try:
            return self.policy.with_overrides(overrides)
        except ConfigurationError as exc:
            log.warning("job %s: ignoring its retry settings: %s", job.id, exc)
            return self.policy

    @hookimpl(trylast=True)
    def qw_job_failed(
        self, job: Job, worker: WorkerInfo, exc: BaseException, failure: Failure
    ) -> Decision | None:
        policy = self.policy_for(job)
        requested = isinstance(exc, Retry)
        if isinstance(exc, PermanentFailure) and not requested:
            return None
        if job.attempts >= policy.max_retries or not (requested or policy.retries(exc)):
            return None
        retry = job.attempts + 1
        delay = policy.delay(retry)
        if isinstance(exc, Retry) and exc.delay is not None:
            if isinstance(exc.delay, (int, float)) and 0 <= exc.delay < math.inf:
                delay = exc.delay
            else:
                log.warning(
                    "job %s: Retry(delay=%r) is not a number of seconds; backing off instead",
                    job.id,
                    exc.delay,
                )
        log.info(
            "job %s: retry %d of %d in %.2f s after %s",
            job.id,
            retry,
            policy.max_retries,
            delay,
            failure.exc_type,
        )
        return Decision.retry(delay)
