"""Unique jobs: at most one job per key is waiting or running at a time.

``broker.queue_job(job, unique="sync-user-42")`` queues the job unless a job queued with
the same key still holds it; then nothing is stored and the existing job's id comes back
instead (:meth:`~qw_core.broker.Producer.queue_job_unique` says which happened). What
"holds" means is the key's *mode*, chosen per job with :class:`Unique`:

``until="end"`` (the default)
    The key is held while its job is queued, delayed, held by a worker (running, or
    waiting in its batch), or waiting for a retry; it is released when the job finishes,
    is dropped, or fails for good (it goes to the failed registry). A job put back after
    its worker crashed keeps the key throughout, so no second copy gets in while the first
    is being recovered, and the re-run's end releases it.
``until="start"``
    Held while the job waits to start: queued or delayed (a retry's wait included); a
    worker taking the job releases it, so one more copy may be queued while it runs.
``ttl=SECONDS`` (throttle)
    Held for that long from the moment the job was queued, whatever becomes of the job.

How a backend keeps the promise (see the Redis protocol page): the key records which job
holds it, and whether it is still held is judged from that job's own state, in the same
atomic step as the queueing. Nothing has to release a key for it to stop counting (a job
that vanished does not hold one), so a crash, a lost reply or a job deleted by hand can
never leave a key stuck; releasing it at the end only frees its memory.

The key travels with the job as ``meta["unique"]`` (:data:`UNIQUE_META`), so a retry, a
recovery and a requeue from the failed registry know it: a requeued job takes its key
again, and is refused (it stays in the registry) while another job holds the key.

What qw does differently from its peers, and why: BullMQ's deduplication keeps a key
with a TTL or until the job completes, and a job removed by hand can leave the key
behind until the TTL passes; rq and Celery have nothing built in (celery-once and
similar locks are released by the worker, and a killed worker leaves them held until a
timeout). qw judges the key by the job that holds it, so no timeout is needed for
safety, and a crash neither frees the key early nor leaves it held.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import attrs

from qw_core.errors import ConfigurationError
from qw_core.models import JSON, Job

#: The key of a job's ``meta`` that holds its unique key and mode.
UNIQUE_META = "unique"
#: The modes of a unique key (see the module's docstring).
UNTIL_END, UNTIL_START, THROTTLE = "end", "start", "ttl"
#: The longest unique key accepted, in characters.
MAX_KEY_LENGTH = 1000
#: The longest TTL accepted (a year): longer is a mistake of units.
MAX_TTL = 365 * 86400.0


def _check_key(key: str | None) -> None:
    if key is None:
        return
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"a unique key must be a non-empty string, not {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise ConfigurationError(f"a unique key is at most {MAX_KEY_LENGTH} characters, not {len(key)}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(f"unique key {key!r} is not valid unicode text") from None


@attrs.frozen
class Unique:
    """How a job is unique: its key, and how long the key is held.

    :param key: the key; jobs with the same key exclude each other, whatever their queue.
        ``None`` only on a task function, where it means "the task and its arguments"
        (see :func:`call_key`).
    :param until: ``"end"`` (default) or ``"start"``: see :mod:`qw_core.unique`.
    :param ttl: hold the key this many seconds from queueing instead (throttle); then
        ``until`` is ``"ttl"``.
    :raises ConfigurationError: an empty or too long key, an unknown ``until``, or a TTL
        that is not a positive number of seconds (or given with ``until``).
    """

    key: str | None = None
    until: str = attrs.field(default=UNTIL_END, kw_only=True)
    ttl: float | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_key(self.key)
        if self.ttl is not None:
            ttl = self.ttl
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL:
                raise ConfigurationError(
                    f"a unique key's ttl must be a number of seconds above 0 and at most a year, not {ttl!r}"
                )
            if self.until not in (UNTIL_END, THROTTLE):
                raise ConfigurationError(f"give until={self.until!r} or a ttl, not both")
            object.__setattr__(self, "until", THROTTLE)  # frozen: set once, here
        elif self.until not in (UNTIL_END, UNTIL_START):
            raise ConfigurationError(
                f"a unique key is held until 'end' or 'start' (or for a ttl), not {self.until!r}"
            )

    def meta(self) -> dict[str, JSON]:
        """This as ``meta["unique"]``.

        :raises ConfigurationError: it has no key.
        """
        if self.key is None:
            raise ConfigurationError("a unique job needs a key (only a task function can make one up)")
        value: dict[str, JSON] = {"key": self.key, "until": self.until}
        if self.ttl is not None:
            value["ttl"] = self.ttl
        return value

    def with_key(self, key: str) -> Unique:
        """This mode with ``key``."""
        return attrs.evolve(self, key=key)


#: What ``unique=`` takes: a key (held until the job ends), a :class:`Unique`, or ``None``.
UniqueSetting = str | Unique | None


def as_unique(setting: UniqueSetting | bool) -> Unique | None:
    """``setting`` as a :class:`Unique` (``True``: one whose key a task makes up).

    :raises ConfigurationError: it is none of those, or not valid.
    """
    if setting is None or setting is False:
        return None
    if setting is True:
        return Unique()
    if isinstance(setting, str):
        return Unique(setting)
    if isinstance(setting, Unique):
        return setting
    raise ConfigurationError(f"unique must be a key, a Unique or True, not {setting!r}")


def with_unique(job: Job, unique: UniqueSetting) -> Job:
    """``job`` carrying ``unique`` in its meta (``None``: ``job`` as it is).

    :raises ConfigurationError: ``unique`` is not valid or has no key.
    """
    found = as_unique(unique)
    if found is None:
        return job
    return attrs.evolve(job, meta={**job.meta, UNIQUE_META: found.meta()})


def unique_of(job: Job) -> Unique | None:
    """The unique key ``job`` carries (``meta["unique"]``), or ``None``.

    :raises ConfigurationError: ``meta["unique"]`` is there but not one qw wrote.
    """
    raw = job.meta.get(UNIQUE_META) if job.meta else None
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("key"), str):
        raise ConfigurationError(f"job {job.id}: meta['unique'] must be an object with a 'key', not {raw!r}")
    ttl = raw.get("ttl")
    until = raw.get("until", UNTIL_END)
    if not isinstance(until, str) or (ttl is not None and not isinstance(ttl, (int, float))):
        raise ConfigurationError(f"job {job.id}: meta['unique'] is not valid: {raw!r}")
    return Unique(str(raw["key"]), until=until, ttl=ttl)


@attrs.frozen
class Queued:
    """What queueing a job did (:meth:`~qw_core.broker.Producer.queue_job_unique`).

    :param id: the job's id: the one queued, or the one that holds the key.
    :param created: ``True`` if the job was queued; ``False`` if a job holding its unique
        key was queued, delayed or running already, whose id ``id`` is.
    """

    id: str
    created: bool


def call_key(task: str, arguments: Mapping[str, Any]) -> str:
    """The unique key of a call of ``task`` (``unique=True`` on a task function): the
    task's name and a SHA-256 of its bound arguments (defaults applied) as canonical JSON
    (keys sorted, no spaces, UTF-8), so ``f(1)``, ``f(x=1)`` and ``f()`` with ``x=1`` as
    the default are one call; ``1`` and ``1.0`` are not (JSON tells them apart)."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return f"{task}:{hashlib.sha256(text.encode()).hexdigest()}"


# -- the in-process table of keys (the memory backend) ----------------------------------------


@attrs.define
class _Lock:
    job_id: str
    until: str
    expires: float = math.inf  # on the table's monotonic clock (throttle)


class UniqueKeys:
    """Which job holds each unique key, for a backend that keeps its jobs in memory.

    The caller holds its own lock around every call, and says, for a job id, whether the
    job is stored and whether a worker took it (``stored`` and ``started``): a key whose
    job is neither held by those rules (see :mod:`qw_core.unique`) is free.
    """

    def __init__(self) -> None:
        self._locks: dict[str, _Lock] = {}
        self._key_of: dict[str, str] = {}  # job id -> its key, while it may hold one

    def holder(self, key: str, *, stored: Any, started: Any, now: float) -> str | None:
        """The id of the job that holds ``key`` now, or ``None`` (free).

        :param stored: ``stored(id)``: the job is queued, delayed or held.
        :param started: ``started(id)``: a worker took it.
        """
        lock = self._locks.get(key)
        if lock is None:
            return None
        if lock.until == THROTTLE:
            held = lock.expires > now
        else:
            held = stored(lock.job_id) and not (lock.until == UNTIL_START and started(lock.job_id))
        return lock.job_id if held else None

    def claim(self, unique: Unique, job_id: str, *, now: float) -> None:
        """Make ``job_id`` the holder of ``unique.key`` (the caller found it free)."""
        assert unique.key is not None
        old = self._locks.get(unique.key)
        if old is not None and self._key_of.get(old.job_id) == unique.key:
            del self._key_of[old.job_id]
        expires = now + unique.ttl if unique.ttl is not None else math.inf
        self._locks[unique.key] = _Lock(job_id, unique.until, expires)
        self._key_of[job_id] = unique.key

    def release(self, job_id: str, *, now: float) -> None:
        """``job_id`` ended: free its key (a throttle's stays until it expires)."""
        key = self._key_of.pop(job_id, None)
        if key is None:
            return
        lock = self._locks.get(key)
        if lock is not None and lock.job_id == job_id and (lock.until != THROTTLE or lock.expires <= now):
            del self._locks[key]

    def sweep(self, now: float) -> None:
        """Forget throttles that expired (so the table stays as large as the keys held)."""
        for key in [k for k, lock in self._locks.items() if lock.until == THROTTLE and lock.expires <= now]:
            lock = self._locks.pop(key)
            if self._key_of.get(lock.job_id) == key:
                del self._key_of[lock.job_id]
