"""What each dashboard page shows, read through the :class:`~qw_core.broker.Inspector`
interface alone, so the dashboard works on every backend.

Every read is bounded: counts come from the broker's counting methods, listings are read
one page at a time (:data:`PAGE` ids and the jobs they name), and the failed registry is
read in chunks (:mod:`qw_core.dashboard.failed`), so a page costs the same with a hundred
jobs queued as with a million.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import attrs

from qw_core.broker import Inspector
from qw_core.models import DEFAULT_QUEUE, JSON, Job, JobsRun, JobState, RunningJob

#: Ids a queue page lists.
PAGE = 50
#: Characters of a job's data shown in a listing.
PREVIEW = 120
#: Minutes the throughput chart shows.
CHART_MINUTES = 15
#: Minutes (this one included) a manager's "jobs begun lately" counts.
RECENT_MINUTES = 5
#: The prefix of a manager's queue in a queue label (as :attr:`JobState.queue` names it).
MANAGER_PREFIX = "manager:"


def split_label(label: str) -> tuple[str | None, str | None]:
    """The ``(manager, queue)`` of a queue label for the broker's listings: ``"default"``
    (the shared queue), a named queue's name, or ``"manager:<m>"``."""
    if label.startswith(MANAGER_PREFIX):
        return label[len(MANAGER_PREFIX) :], None
    return None, None if label == DEFAULT_QUEUE else label


@attrs.frozen(kw_only=True)
class QueueRow:
    label: str
    queued: int
    delayed: int
    running: int


@attrs.frozen(kw_only=True)
class WorkerRow:
    name: str
    heartbeat: float | None  # seconds left
    held: int
    running: list[RunningJob]


@attrs.frozen(kw_only=True)
class ManagerRow:
    name: str
    heartbeat: float | None
    workers: list[WorkerRow]
    recent_jobs: int  # begun in the last RECENT_MINUTES minutes


@attrs.frozen(kw_only=True)
class Overview:
    queues: list[QueueRow]
    managers: list[ManagerRow]
    failed: int
    throughput: list[JobsRun]
    keeps_throughput: bool
    stray: dict[str, int]
    problems: list[str]
    read_at: float

    @property
    def queued(self) -> int:
        return sum(q.queued for q in self.queues)

    @property
    def delayed(self) -> int:
        return sum(q.delayed for q in self.queues)

    @property
    def running(self) -> int:
        return sum(len(w.running) for m in self.managers for w in m.workers)


def overview(broker: Inspector) -> Overview:
    """The overview: every queue with its counts, every manager and its workers, the
    failed count and the jobs begun per minute."""
    managers = broker.managers()
    running = {name: broker.running_jobs(name) for name in managers}
    by_queue: dict[str, int] = {}
    for jobs in running.values():
        for job in jobs:
            if job.queue is not None:
                by_queue[job.queue] = by_queue.get(job.queue, 0) + 1
    labels = [DEFAULT_QUEUE, *broker.named_queues(), *(MANAGER_PREFIX + m for m in managers)]
    queues = []
    for label in labels:
        manager, queue = split_label(label)
        queues.append(
            QueueRow(
                label=label,
                queued=broker.queued_count(manager, queue=queue),
                delayed=broker.delayed_count(manager, queue=queue),
                running=by_queue.get(label, 0),
            )
        )
    throughput = broker.jobs_run(minutes=CHART_MINUTES)
    rows = []
    for name in managers:
        workers = [
            WorkerRow(
                name=worker,
                heartbeat=_left(broker, worker),
                held=broker.held_count(worker),
                running=[job for job in running[name] if job.worker == worker],
            )
            for worker in broker.workers(name)
        ]
        recent = sum(entry.counts.get(name, 0) for entry in throughput[-RECENT_MINUTES:])
        rows.append(ManagerRow(name=name, heartbeat=_left(broker, name), workers=workers, recent_jobs=recent))
    return Overview(
        queues=queues,
        managers=rows,
        failed=broker.failed_count(),
        throughput=throughput,
        keeps_throughput=broker.capabilities.throughput,
        stray=broker.stray_queues(),
        problems=broker.problems(),
        read_at=time.time(),
    )


def _left(broker: Inspector, name: str) -> float | None:
    beat = broker.heartbeat_of(name)
    return None if beat is None else beat[1]


@attrs.frozen(kw_only=True)
class JobRow:
    """One job of a listing: its id, the job if it is still stored, and a preview."""

    position: int
    job_id: str
    job: Job | None
    due_at: float | None = None

    @property
    def preview(self) -> str:
        return "" if self.job is None else preview(self.job.data)


def preview(data: JSON) -> str:
    """``data`` as one line of JSON, cut to :data:`PREVIEW` characters."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ": "))
    return text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"


@attrs.frozen(kw_only=True)
class QueuePage:
    label: str
    kind: str  # "queued" or "delayed"
    count: int
    offset: int
    rows: list[JobRow]

    @property
    def has_next(self) -> bool:
        return self.offset + PAGE < self.count

    @property
    def previous_offset(self) -> int | None:
        return None if self.offset == 0 else max(0, self.offset - PAGE)

    @property
    def next_offset(self) -> int:
        return self.offset + PAGE


def queue_page(broker: Inspector, label: str, *, kind: str = "queued", offset: int = 0) -> QueuePage:
    """One page of a queue's jobs (``kind`` ``"queued"``: next to run first; ``"delayed"``:
    soonest due first): :data:`PAGE` ids from ``offset`` on, and each one's stored job.

    :raises InvalidName: the label names no valid queue.
    """
    manager, queue = split_label(label)
    for name in (manager, queue):
        if name is not None:
            broker.check_name(name)
    offset = max(0, offset)
    if kind == "delayed":
        count = broker.delayed_count(manager, queue=queue)
        ids = broker.delayed_job_ids(manager, queue=queue, offset=offset, limit=PAGE)
        states = [broker.job_status(job_id) for job_id in ids]
        rows = [
            JobRow(position=offset + n, job_id=s.job_id, job=s.job, due_at=s.due_at)
            for n, s in enumerate(states)
        ]
    else:
        count = broker.queued_count(manager, queue=queue)
        ids = broker.queued_job_ids(manager, queue=queue, offset=offset, limit=PAGE)
        rows = [
            JobRow(position=offset + n, job_id=job_id, job=broker.get_job(job_id))
            for n, job_id in enumerate(ids)
        ]
    return QueuePage(label=label, kind=kind, count=count, offset=offset, rows=rows)


@attrs.frozen(kw_only=True)
class DelayedOverview:
    queues: list[QueueRow]
    page: QueuePage | None


def delayed_overview(broker: Inspector, label: str | None, offset: int) -> DelayedOverview:
    """The delayed jobs: each queue's count, and a page of one queue's (``label``, or the
    first that has any)."""
    labels = [DEFAULT_QUEUE, *broker.named_queues(), *(MANAGER_PREFIX + m for m in broker.managers())]
    rows = []
    for each in labels:
        manager, queue = split_label(each)
        rows.append(
            QueueRow(label=each, queued=0, delayed=broker.delayed_count(manager, queue=queue), running=0)
        )
    if label is None:
        label = next((row.label for row in rows if row.delayed), None)
    page = None if label is None else queue_page(broker, label, kind="delayed", offset=offset)
    return DelayedOverview(queues=rows, page=page)


def job_state(broker: Inspector, job_id: str) -> JobState:
    """Where job ``job_id`` is, as ``qw job`` shows it."""
    return broker.job_status(job_id)


def pretty(value: JSON | object) -> str:
    """``value`` as indented JSON, for a ``<pre>`` (the template escapes it)."""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False, default=repr)


def chart_points(runs: Sequence[JobsRun]) -> list[tuple[int, int]]:
    """(minute, jobs begun) for the chart, oldest first."""
    return [(entry.minute, entry.total) for entry in runs]
