"""The error tree of qw.

Every error qw raises on purpose derives from :class:`QwError`, so a caller can catch
"anything qw refused" in one clause. Where an error refines a builtin, it inherits that
too (a target module that cannot be found is also an :class:`ImportError`), the way
attrs' ``FrozenError`` is an ``AttributeError``.

Backends translate their driver's errors into this tree where they happen
(``raise BrokerUnavailable(...) from exc``), so nothing above the broker needs to know
which driver is underneath.
"""

from __future__ import annotations


class QwError(Exception):
    """Root of every error qw raises on purpose."""


class ConfigurationError(QwError, ValueError):
    """A setting is invalid: a worker count, a URL, an option value."""


class InvalidName(ConfigurationError):
    """A manager or worker name would collide with the key schema or is malformed."""


class InvalidJob(QwError, ValueError):
    """Job data that cannot be queued: not JSON, too large, or using a reserved field."""


class PermanentFailure(QwError):
    """A job failed in a way that running it again cannot mend (a task its router does
    not have, a call that does not fit the function, a result that is not JSON): the
    built-in retry plugin never retries it, whatever ``--max-retries`` says, so the job
    goes to the failed registry at once, to be requeued once the code is fixed. A
    target may raise a subclass of its own for failures of that kind."""


class JobTooLarge(InvalidJob):
    """Job data whose encoded size exceeds the broker's configured limit.

    :param job_id: the job's id.
    :param size: its encoded size, in bytes.
    :param limit: the broker's limit, in bytes.
    :param hint: how to raise the limit (the backend knows).
    """

    def __init__(
        self, message: str, *, job_id: str = "", size: int = 0, limit: int = 0, hint: str = ""
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.size = size
        self.limit = limit
        self.hint = hint


class TargetError(QwError):
    """Base class for a target string that does not name a callable."""


class TargetModuleNotFound(TargetError, ImportError):
    """The module part of a target string cannot be imported."""


class TargetAttributeNotFound(TargetError, AttributeError):
    """The module imports, but has no attribute with the target's name."""


class TargetNotCallable(TargetError, TypeError):
    """The target string names an object that cannot be called, or one that cannot be
    called as ``target(job_id, job_data)``."""


class TargetNotRun(QwError):
    """A job's target did not run although it was called: it (or a ``qw_job_run`` plugin)
    returned an awaitable that a worker running plain functions cannot run. The job fails
    with this, never counts as succeeded."""


class InvalidResult(PermanentFailure, TypeError):
    """A target returned a value that is not JSON: the job fails (nothing is kept)."""


class NoResult(QwError, LookupError):
    """A job's result was asked for and there is none (yet, any more, or at all)."""


class InvalidTaskCall(InvalidJob, PermanentFailure, TypeError):
    """A call of a task function that cannot be queued or run: arguments that do not fit
    the function's signature or are not JSON (refused by ``enqueue``, before anything is
    queued), or job data that is not a task call (the job fails with this)."""


class UnknownTask(PermanentFailure, LookupError):
    """A job names a task its worker's router does not have (the job fails with this)."""


class DuplicateTask(ConfigurationError):
    """A task is registered under a name its router already has."""


class BackendError(QwError):
    """Base class for failures of a broker backend."""


class BackendNotFound(BackendError, LookupError):
    """No installed backend has the requested name."""


class BrokerUnavailable(BackendError, ConnectionError):
    """The broker's server cannot be reached (down, wrong address, refused credentials)."""


class JobsNotReplicated(BackendError):
    """Jobs were queued, but fewer replicas than asked for said they had them in time
    (``RedisOptions.wait_replicas``).

    The jobs **are queued**, on the primary: they run, unless the primary fails before it
    passes them on. Do not queue them again as new jobs (they would run twice). Queueing
    the very same :class:`~qw_core.models.Job` objects again (same ids) adds nothing while
    they wait, are held or delayed (an id is never queued twice), but runs again any that
    already finished.

    :param job_ids: the jobs queued whose replication was not confirmed.
    :param confirmed: the jobs of the same call that were (queued in earlier batches).
    :param not_queued: the jobs of the same call that were not queued at all.
    :param wanted: how many replicas were asked for.
    :param acknowledged: how many acknowledged.
    """

    def __init__(
        self,
        message: str,
        *,
        job_ids: tuple[str, ...] = (),
        confirmed: tuple[str, ...] = (),
        not_queued: tuple[str, ...] = (),
        wanted: int = 0,
        acknowledged: int = 0,
    ) -> None:
        super().__init__(message)
        self.job_ids = job_ids
        self.confirmed = confirmed
        self.not_queued = not_queued
        self.wanted = wanted
        self.acknowledged = acknowledged


class UniqueJobsUnsupported(BackendError, NotImplementedError):
    """The backend cannot keep jobs unique (``capabilities.unique`` is false): nothing was
    queued, rather than a job queued without the promise asked for."""


class WorkerRunning(BackendError):
    """Jobs were to be moved off a worker's list while that worker runs (they are its
    own: held, or sent to it)."""


class JobCrashed(QwError):
    """Recorded (never raised) for a job whose worker kept dying while it held the job.

    The failed-job registry keeps such a job with a failure of kind ``"crashed"``.
    """


class JobTimeout(QwError, TimeoutError):
    """Recorded (never raised) for a job that ran past its time limit; its worker was killed.

    The failed-job registry keeps such a job with a failure of kind ``"timeout"``.
    """


class PluginError(QwError):
    """A plugin could not be loaded or implements a hook that does not exist."""


class Retry(QwError):
    """Raised by a target to ask for the job to be run again.

    :param delay: seconds to wait before the next attempt; ``None`` lets the retry
        policy choose its back-off.
    """

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay
