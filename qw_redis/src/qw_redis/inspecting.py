"""Jobs and the running system: the :class:`~qw_core.broker.Inspector` role of the Redis
broker, but for the listings (:mod:`qw_redis.listing`).

Where one job is (:meth:`InspectorPart.job_status`), who runs and what (managers, workers,
heartbeats, the jobs running, the jobs begun a minute), and what is wrong with the server
or its keys (:meth:`InspectorPart.problems`, :meth:`InspectorPart.setup_warnings`). One
part of :class:`~qw_redis.broker.RedisBroker`, over the connection of :mod:`qw_redis.base`.
"""

from __future__ import annotations

import math
from typing import Any, cast

import redis

from qw_core.broker import check_minutes
from qw_core.errors import InvalidJob
from qw_core.models import DEFAULT_QUEUE, Job, JobsRun, JobState, RunningJob, State, queue_label
from qw_redis import codec, keys
from qw_redis.base import RedisBase, translated, valid_name

#: qw's own keys, and the type each must have (:meth:`InspectorPart.problems` checks them).
_OWN_KEY_TYPES = (
    ("ALL_MANAGERS", "set"),
    ("MANAGERS", "hash"),
    ("ORIGIN", "hash"),
    ("DUE", "zset"),
    ("LEGACY_DELAYED", "zset"),
    ("FAILED", "zset"),
    ("RECOVERIES", "hash"),
    ("QUEUES", "set"),
    ("SCHEDULERS", "set"),
    ("MANAGER_OF", "hash"),
)


def _number(text: str) -> float | None:
    """``text`` as a finite number, or ``None`` (a time another program wrote, say)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _origin_label(origin: str | None) -> str | None:
    """The queue a ``qw:origin`` value stands for, as :attr:`JobState.queue` names it."""
    if origin is None:
        return None
    if origin == keys.SHARED_ORIGIN:
        return DEFAULT_QUEUE
    named = keys.named_queue(origin)
    return named if named is not None else f"manager:{origin}"


class InspectorPart(RedisBase):
    """The read-only methods of :class:`~qw_redis.broker.RedisBroker` about jobs, workers
    and the server."""

    @translated
    def job_status(self, job_id: str) -> JobState:
        """See :meth:`Broker.job_status`: one pipeline of reads, and for a held job one
        more (``LPOS`` on each registered worker's list)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.zscore(self._keys.FAILED, job_id)
        pipe.hgetall(self._keys.job(job_id))
        pipe.get(self._keys.job_marker(job_id))
        pipe.hget(self._keys.ORIGIN, job_id)
        pipe.zscore(self._keys.FINISHED, job_id)
        failed_at, fields, marker, origin, finished_at = pipe.execute(raise_on_error=False)
        if failed_at is not None and not isinstance(failed_at, Exception):
            entry = self.get_failed(job_id)
            if entry is not None:
                return JobState(
                    job_id=job_id,
                    state=State.FAILED,
                    job=entry.job,
                    queue=queue_label(entry.job),
                    worker=entry.failure.worker,
                    failure=entry.failure,
                )
        if (fields and not isinstance(fields, Exception)) or isinstance(marker, str):
            return self._stored_state(job_id, fields, marker, origin)
        found = self.get_result(job_id)
        if found is not None:
            return JobState(
                job_id=job_id,
                state=State.SUCCEEDED,
                worker=found.worker,
                result=found,
                finished_at=found.finished_at,
            )
        if isinstance(finished_at, float):
            return JobState(job_id=job_id, state=State.SUCCEEDED, finished_at=finished_at)
        return JobState(job_id=job_id, state=State.UNKNOWN)

    def _stored_state(self, job_id: str, fields: Any, marker: Any, origin: Any) -> JobState:
        """Where a stored (queued, delayed or held) job is."""
        try:
            job: Job | None = codec.decode_job(
                job_id,
                fields if isinstance(fields, dict) else {},
                marker if isinstance(marker, str) else None,
            )
        except InvalidJob:
            job = None  # unreadable: its next take moves it to the failed registry
        label = None if job is None else queue_label(job)
        if isinstance(origin, str):
            holder = self._holder(job_id)
            since = None if holder is None else self._client.hget(self._keys.running(holder), job_id)
            return JobState(
                job_id=job_id,
                state=State.HELD,
                job=job,
                queue=label,
                worker=holder,
                since=None if since is None else float(since),
            )
        if job is not None and job.worker is None:
            due = self._client.zscore(self._keys.delayed(self._origin_of(job)), job_id)
            if due is not None:
                return JobState(job_id=job_id, state=State.DELAYED, job=job, queue=label, due_at=float(due))
        return JobState(job_id=job_id, state=State.QUEUED, job=job, queue=label)

    def _holder(self, job_id: str) -> str | None:
        """The registered worker whose list holds ``job_id`` (``None``: none registered does)."""
        workers = [worker for manager in self.managers() for worker in self.workers(manager)]
        pipe = self._client.pipeline(transaction=False)
        for worker in workers:
            pipe.lpos(self._keys.queue(worker), job_id)
        found = pipe.execute(raise_on_error=False)
        return next((w for w, at in zip(workers, found, strict=True) if isinstance(at, int)), None)

    @translated
    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        pipe = self._client.pipeline(transaction=False)
        pipe.get(self._keys.heartbeat(name))
        pipe.pttl(self._keys.heartbeat(name))
        token, left_ms = pipe.execute()
        if token is None or left_ms < 0:
            return None
        return str(token), left_ms / 1000

    @translated
    def managers(self) -> list[str]:
        return sorted(cast("set[str]", self._client.smembers(self._keys.ALL_MANAGERS)))

    @translated
    def workers(self, manager: str) -> list[str]:
        return sorted(cast("set[str]", self._client.smembers(self._keys.manager_workers(manager))))

    @translated
    def named_queues(self) -> list[str]:
        """See :meth:`Broker.named_queues`: the named queues in ``qw:queues``."""
        try:
            members = cast("set[str]", self._client.smembers(self._keys.QUEUES))
        except redis.ResponseError as exc:  # not a set: problems() says so
            if str(exc).startswith("WRONGTYPE"):
                return []
            raise
        return sorted(name for member in members if (name := keys.named_queue(member)) is not None)

    @translated
    def stray_queues(self) -> dict[str, int]:
        """See :meth:`Broker.stray_queues`: the names in ``qw:queues`` (jobs queued by the
        original qw's client to a name are not found)."""
        return dict(sorted(self._scripts.stray().items()))

    @translated
    def problems(self) -> list[str]:
        """Keys of the wrong type: queues and held lists (workers skip a queue that is not
        a list), and qw's own keys (a script that would write one fails, changing nothing)."""
        managers = [m for m in self.managers() if valid_name(m)]
        expected = {getattr(self._keys, name): kind for name, kind in _OWN_KEY_TYPES}
        expected.update({self._keys.queue(m): "list" for m in [None, *managers]})
        expected.update({self._keys.delayed(m): "zset" for m in [None, *managers]})
        named = [keys.origin(queue=q) for q in self.named_queues() if valid_name(q)]
        expected.update({self._keys.queue_list(origin): "list" for origin in named})
        expected.update({self._keys.delayed(origin): "zset" for origin in named})
        expected.update({self._keys.manager_workers(m): "set" for m in managers})
        pipe = self._client.pipeline(transaction=False)
        for manager in managers:
            pipe.smembers(self._keys.manager_workers(manager))
        for members in pipe.execute(raise_on_error=False):
            if not isinstance(members, Exception):
                expected.update({self._keys.queue(w): "list" for w in members if valid_name(w)})
        pipe = self._client.pipeline(transaction=False)
        for key in expected:
            pipe.type(key)
        found = dict(zip(expected, pipe.execute(), strict=True))
        return [
            f"{codec.shown(key)} is a {found[key]}, not a {kind}: "
            + ("no worker takes jobs from it" if kind == "list" else "qw cannot use it")
            + " (another program's key? rename or delete it)"
            for key, kind in expected.items()
            if found[key] not in (kind, "none")
        ]

    @translated
    def get_job(self, job_id: str) -> Job | None:
        """The job stored as ``job:<id>``, else the one in the failed registry, else ``None``."""
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(self._keys.job(job_id))
        pipe.get(self._keys.job_marker(job_id))
        pipe.hget(self._keys.ORIGIN, job_id)
        pipe.hget(self._keys.failed_job(job_id), "job")
        fields, marker, origin, record = pipe.execute()
        if fields or marker is not None:
            return codec.decode_job(job_id, fields, marker, manager=origin or None)
        return None if record is None else codec.decode_record(record)

    @translated
    def running_jobs(self, manager: str) -> list[RunningJob]:
        """See :meth:`Broker.running_jobs`: each worker's ``qw:running:<w>`` (one pipeline),
        then the ids' ``qw:origin`` (one ``HMGET``). A record of the wrong type, or a time
        that is not a number, is read as nothing known."""
        self._check_cached(manager)
        workers = sorted(cast("set[str]", self._client.smembers(self._keys.manager_workers(manager))))
        pipe = self._client.pipeline(transaction=False)
        for worker in workers:
            pipe.hgetall(self._keys.running(worker))
        found: list[tuple[str, str, float | None]] = []
        for worker, record in zip(workers, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(record, dict):
                found += [(job_id, worker, _number(at)) for job_id, at in sorted(record.items())]
        if not found:
            return []
        origins = cast(
            "list[str | None]", self._client.hmget(self._keys.ORIGIN, [job_id for job_id, _, _ in found])
        )
        return [
            RunningJob(job_id=job_id, worker=worker, since=since, queue=_origin_label(origin))
            for (job_id, worker, since), origin in zip(found, origins, strict=True)
        ]

    @translated
    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        """See :meth:`Broker.jobs_run`: ``TIME``, then one pipeline of ``HGETALL`` of each
        minute's ``qw:jobs-run:<minute>``; a count that is not a whole number, or a key of
        the wrong type, is read as none."""
        check_minutes(minutes)
        seconds, _ = self._client.time()
        now = int(seconds) - int(seconds) % 60
        wanted = list(range(now - 60 * (minutes - 1), now + 1, 60))
        pipe = self._client.pipeline(transaction=False)
        for minute in wanted:
            pipe.hgetall(self._keys.jobs_run(minute))
        found = []
        for minute, record in zip(wanted, pipe.execute(raise_on_error=False), strict=True):
            counts = record if isinstance(record, dict) else {}
            found.append(JobsRun(minute=minute, counts={m: int(n) for m, n in counts.items() if n.isdigit()}))
        return found

    def setup_warnings(self) -> list[str]:
        """Warns when Redis's ``maxmemory-policy`` may evict keys (anything but ``noeviction``)."""
        try:
            policy = self._info_field("memory", "maxmemory_policy")
        except redis.RedisError as exc:
            raise self._error(exc) from exc
        if policy is None or policy == "noeviction":
            return []
        return [
            f"Redis at {self.describe()} has maxmemory-policy {policy}: under memory pressure it "
            "may evict qw's keys (queued and held jobs) and lose them; set maxmemory-policy noeviction"
        ]
