"""The values qw passes around: jobs, failures, and what to do with a failed job.

Everything here is a frozen attrs class, changed with :func:`attrs.evolve`. None of it
knows how a backend stores it: the Redis hash layout lives in ``qw_redis.codec``, the way
attrs' documentation asks for the business model and the wire format to stay apart.
"""

from __future__ import annotations

import enum
import math
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias

import attrs

from qw_core import tracebacks

if TYPE_CHECKING:
    from qw_core.results import JobResult

#: Any value that survives ``json.dumps`` / ``json.loads`` unchanged.
JSON: TypeAlias = "dict[str, JSON] | list[JSON] | str | int | float | bool | None"


#: The name of the shared queue: the one served when a worker names none, and the one a
#: job goes to when it names none (``Job.queue`` is ``None`` for it).
DEFAULT_QUEUE = "default"


def new_job_id() -> str:
    """A fresh job id: a random UUID4 string, as the original qw used.

    Built from ``os.urandom`` directly: the same kind of id as ``str(uuid.uuid4())`` at
    half the cost, which shows when ``queue_jobs`` queues tens of thousands of jobs a second.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _shared_as_none(queue: str | None) -> str | None:
    """A job's queue as :class:`Job` keeps it: the shared queue's name, ``"default"``, as ``None``."""
    return None if queue == DEFAULT_QUEUE else queue


@attrs.frozen(kw_only=True)
class Job:
    """One unit of work: the id and data handed to ``target(job_id, job_data)``.

    :param id: the job id (a UUID4 string for jobs qw creates; any string for jobs written
        by other programs).
    :param data: the job's data, any JSON value. A mapping is the common case and the only
        shape the original qw could carry.
    :param manager: the manager whose private queue the job was queued on, or ``None``.
    :param worker: the worker the job was queued for directly, or ``None``.
    :param queue: the named queue the job was queued on (``qw run --queue``), or ``None``
        for the shared queue (named ``"default"``, which is stored as ``None``, so that a
        job built with ``queue="default"`` goes to the queue ``qw run --queue default``
        serves; ``all:jobs`` on Redis). A job goes to one place: a named queue, a
        manager's queue, or a worker (of ``manager``, if given).
    :param attempts: how many times the job has already been run and failed or was
        retried; ``0`` for a job on its first run.
    :param queued_at: when the job was queued (seconds since the epoch), if known.
    :param meta: framework metadata that travels with the job (retry overrides, a job
        timeout, ...). Plugins may read it; keys are owned by whoever documents them.
        ``meta["timeout"]``, a positive number of seconds, is the job's own time limit:
        its worker is killed and the job failed (kind ``"timeout"``) if it runs longer
        (it overrides the manager's ``job_timeout``).
    :param suspect: set by the broker on a job it hands out after the job's worker died
        while running it beside other jobs, so that nobody knows which one killed the
        process: its new worker runs it alone, so that if it crashes again it alone is
        blamed. Not stored, and not part of equality.
    """

    id: str = attrs.field(factory=new_job_id)
    data: JSON = attrs.field(factory=dict)
    manager: str | None = None
    worker: str | None = None
    queue: str | None = attrs.field(default=None, converter=_shared_as_none)
    attempts: int = 0
    queued_at: float | None = None
    meta: Mapping[str, JSON] = attrs.field(factory=dict)
    suspect: bool = attrs.field(default=False, eq=False, repr=False)

    @classmethod
    def new(
        cls,
        data: JSON,
        *,
        manager: str | None = None,
        worker: str | None = None,
        queue: str | None = None,
        meta: Mapping[str, JSON] | None = None,
    ) -> Job:
        """A job ready to be queued: a fresh id and the current time.

        :param queue: a named queue; ``"default"`` (or ``None``) is the shared queue.
        :raises ValueError: a named ``queue`` with a ``manager`` or ``worker``.
        """
        queue = _shared_as_none(queue)
        if queue is not None and (manager is not None or worker is not None):
            other = "manager" if manager is not None else "worker"
            raise ValueError(f"a job goes to one place: give queue {queue!r} or a {other}, not both")
        return cls(
            data=data,
            manager=manager,
            worker=worker,
            queue=queue,
            queued_at=time.time(),
            meta=dict(meta or {}),
        )

    @property
    def attempt(self) -> int:
        """The number of the run in progress: ``1`` on the first run."""
        return self.attempts + 1


@attrs.frozen(kw_only=True)
class Failure:
    """Why a job failed, as kept in the failed-job registry.

    :param kind: ``"error"`` (the target raised), ``"timeout"``, ``"crashed"`` (its worker
        died too often while running it) or ``"invalid"`` (the stored job was unreadable).
    """

    kind: str = "error"
    exc_type: str
    message: str
    traceback: str = ""
    worker: str | None = None
    failed_at: float = attrs.field(factory=time.time)

    @classmethod
    def from_exception(cls, exc: BaseException, *, worker: str | None, kind: str = "error") -> Failure:
        """Describe ``exc`` (with its traceback) as a failure seen by ``worker``.

        The traceback leaves out Python's ``^^^^`` marker lines, which cost more than
        running a quick job (see :mod:`qw_core.tracebacks`). Whatever the exception holds,
        the result is storable text: a ``__str__`` that raises gives a placeholder, and
        lone surrogates (half a UTF-16 pair, or bytes that were not UTF-8) become
        ``\\udcxx`` escapes.
        """
        try:
            message = str(exc)
        except Exception:
            message = f"<{type(exc).__qualname__} whose str() raised>"
        text = tracebacks.format_exception(exc)
        return cls(
            kind=kind,
            exc_type=_storable(f"{type(exc).__module__}.{type(exc).__qualname__}"),
            message=_storable(message),
            traceback=_storable(text),
            worker=worker,
        )


def _storable(text: str) -> str:
    """``text`` with any lone surrogate written as an escape, so it encodes as UTF-8."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@attrs.frozen(kw_only=True)
class FailedJob:
    """A job in the failed-job registry: the job as it last ran, and why it failed.

    ``job.attempts`` counts every run that failed, the last one included.
    """

    job: Job
    failure: Failure


class Action(enum.Enum):
    """What happens to a job whose target raised."""

    RETRY = "retry"  #: queue it again (after ``Decision.delay`` seconds)
    FAIL = "fail"  #: keep it in the failed-job registry
    DROP = "drop"  #: forget it, as if it had finished


def _delay(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"a retry delay must be a finite number of seconds, 0 or more, not {value!r}")


@attrs.frozen
class Decision:
    """The answer of the ``qw_job_failed`` hook.

    :param action: retry, fail or drop.
    :param delay: for a retry, seconds to wait first (finite, 0 or more).
    """

    action: Action = attrs.field(validator=attrs.validators.instance_of(Action))
    delay: float = attrs.field(default=0.0, validator=_delay)

    @classmethod
    def retry(cls, delay: float = 0.0) -> Decision:
        return cls(Action.RETRY, delay)

    @classmethod
    def fail(cls) -> Decision:
        return cls(Action.FAIL)

    @classmethod
    def drop(cls) -> Decision:
        return cls(Action.DROP)


class Outcome(enum.Enum):
    """How a run of a job ended, as reported to ``qw_job_finished``."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    DROPPED = "dropped"


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """Who a worker is, as hooks in the worker process see it."""

    name: str
    manager: str
    pid: int


@attrs.frozen(kw_only=True)
class ManagerInfo:
    """Who a manager is, as hooks in the manager process see it."""

    name: str
    num_workers: int
    backend: str


class State(enum.Enum):
    """Where a job is (see :class:`JobState`)."""

    QUEUED = "queued"  #: waiting on its queue
    DELAYED = "delayed"  #: waiting for its due time
    HELD = "held"  #: taken by a worker: running, or about to (in its batch)
    FAILED = "failed"  #: in the failed-job registry
    SUCCEEDED = "succeeded"  #: finished lately (within the retention time): with its result, if any
    UNKNOWN = "unknown"  #: none of those: never queued, or finished and forgotten since


@attrs.frozen(kw_only=True)
class JobState:
    """Where job ``job_id`` is now, as :meth:`Broker.job_status` found it.

    :param state: where it is.
    :param job: the job as stored (queued, delayed, held or failed), else ``None``.
    :param queue: the queue it waits on, goes to when due, or came from: a named queue's
        name, ``"default"`` for the shared queue, or ``"manager:<m>"`` for manager ``<m>``'s.
    :param worker: the worker that holds it (``HELD``), or ran it (``SUCCEEDED``, ``FAILED``).
    :param due_at: when a delayed job is due (seconds since the epoch, the backend's clock).
    :param since: when a held job began to run (seconds since the epoch, its worker's
        clock), as its manager's last heartbeat said; ``None`` when not known yet (the
        next heartbeat, within seconds, says it) or it has not begun.
    :param failure: why it failed (``FAILED``).
    :param result: what it returned (``SUCCEEDED``): a :class:`qw_core.results.JobResult`;
        ``None`` when it returned nothing.
    :param finished_at: when it finished (``SUCCEEDED``; seconds since the epoch, the
        backend's clock).
    """

    job_id: str
    state: State
    job: Job | None = None
    queue: str | None = None
    worker: str | None = None
    due_at: float | None = None
    since: float | None = None
    failure: Failure | None = None
    result: JobResult | None = None
    finished_at: float | None = None


def queue_label(job: Job) -> str:
    """The queue ``job`` goes to, as :class:`JobState` and ``qw job`` name it."""
    if job.worker is not None:
        return f"worker:{job.worker}"
    if job.manager is not None:
        return f"manager:{job.manager}"
    return job.queue or DEFAULT_QUEUE


# -- periodic jobs -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TickState:
    """The last tick of a schedule that was enqueued, as the backend records it.

    :param tick: the tick (seconds since the epoch).
    :param manager: the manager that enqueued it.
    :param at: when it was enqueued (seconds since the epoch, the backend's clock).
    :param job_id: the id of its job.
    """

    tick: float
    manager: str
    at: float
    job_id: str


@attrs.frozen(kw_only=True)
class TickResult:
    """What :meth:`Broker.enqueue_tick <qw_core.broker.Broker.enqueue_tick>` did.

    :param enqueued: this call recorded the tick and queued its job; ``False``: the tick
        was not newer than the schedule's last (enqueued already, by this call's first try
        or by another manager, or an older tick), and nothing was written.
    :param last: the schedule's last tick after the call.
    """

    enqueued: bool
    last: TickState


@attrs.frozen(kw_only=True)
class RunningJob:
    """A job a worker has in hand now, as its manager's last heartbeat said
    (:meth:`Broker.running_jobs`).

    :param job_id: the job's id.
    :param worker: the worker running it.
    :param since: when it began (seconds since the epoch, its worker's clock); ``None`` when
        not known.
    :param queue: the queue it came from, named as :attr:`JobState.queue` names it
        (``"default"``, a named queue's name, or ``"manager:<m>"``); ``None`` when not known.
    """

    job_id: str
    worker: str
    since: float | None = None
    queue: str | None = None


@attrs.frozen(kw_only=True)
class JobsRun:
    """How many jobs the workers of each manager began in one minute (:meth:`Broker.jobs_run`).

    :param minute: the minute's start, in seconds since the epoch (a multiple of 60), by
        the backend's clock.
    :param counts: manager name → jobs its workers began in that minute.
    """

    minute: int
    counts: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def total(self) -> int:
        """Jobs begun in that minute by every manager."""
        return sum(self.counts.values())


@attrs.frozen(kw_only=True)
class ScheduleInfo:
    """A schedule that a running manager declares, as ``qw schedules`` lists it
    (:meth:`Broker.schedules <qw_core.broker.Broker.schedules>`).

    :param id: the schedule's id.
    :param cron: its cron expression.
    :param timezone: the zone the expression reads in.
    :param queue: the named queue its jobs go to (``None``: the shared queue).
    :param next_run: its next tick (seconds since the epoch) after the backend's time now,
        ``None`` if it has none.
    :param last_run: its last tick that was enqueued, ``None`` if none was.
    :param last_manager: the manager that enqueued that tick.
    :param missed: what it does with missed ticks (``"latest"`` or ``"all"``).
    :param catch_up: the most missed ticks ``"all"`` enqueues.
    :param declared_by: the running managers that declare it so, sorted.
    :param conflict: other running managers declare the same id differently (each is
        then listed once per way it is declared).
    """

    id: str
    cron: str
    timezone: str
    queue: str | None
    next_run: float | None
    last_run: float | None
    last_manager: str | None
    missed: str = "latest"
    catch_up: int = 1
    declared_by: tuple[str, ...] = ()
    conflict: bool = False
