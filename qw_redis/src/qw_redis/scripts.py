"""The Lua scripts behind every multi-key operation, one typed method each.

Each script in ``lua/`` starts with a comment listing its KEYS and ARGV and what it reads,
writes and returns; this module only packs arguments and unpacks replies. Scripts are
sent once and then called by SHA (redis-py's :class:`~redis.commands.core.Script` runs
``EVALSHA`` and reloads after a ``SCRIPT FLUSH`` or a failover).

Every script is prefixed with :data:`qw_redis.keys.LUA_PRELUDE` (the key patterns) and
``lua/common.lua`` (shared helpers), so no key pattern is spelt twice.

Redis errors are not translated here; :class:`~qw_redis.broker.RedisBroker` does that at
its boundary.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import attrs
import redis

from qw_redis import keys

#: Most wake-up tokens kept on one wake list: enough to wake every blocked worker of a
#: host, few enough that stale tokens cost little.
WAKE_CAP = 64
#: Most ids a single recover.lua call moves, so one dead worker never blocks Redis long.
RECOVER_BATCH = 1000


def _read(name: str) -> str:
    return (resources.files("qw_redis") / "lua" / name).read_text(encoding="utf-8")


@functools.cache
def script_source(name: str) -> str:
    """The full text sent to Redis for ``lua/<name>``: prelude, helpers, then the script."""
    return f"{keys.LUA_PRELUDE}local WAKE_CAP = {WAKE_CAP}\n{_read('common.lua')}\n{_read(name)}"


@attrs.frozen
class Taken:
    """One job handed out by ``take.lua``.

    :param id: the job id.
    :param source: ``"w"`` (sent to the worker directly), ``"m"`` (the manager's queue) or
        ``"a"`` (the shared queue).
    :param fields: the job hash (``{}`` if it is missing), or ``None`` when it was too large.
    :param size: the hash's size in bytes when it was too large, else ``0``.
    """

    id: str
    source: str
    fields: dict[str, str] | None
    size: int = 0


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    it = iter(flat)
    return dict(zip(it, it, strict=False))


def _flatten(fields: Mapping[str, str]) -> list[str]:
    flat: list[str] = [str(len(fields))]
    for name, value in fields.items():
        flat += (name, value)
    return flat


class Scripts:
    """The scripts, registered on one client.

    :param client: a client created with ``decode_responses=True``.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._queue = client.register_script(script_source("queue.lua"))
        self._take = client.register_script(script_source("take.lua"))
        self._finish = client.register_script(script_source("finish.lua"))
        self._fail = client.register_script(script_source("fail.lua"))
        self._retry = client.register_script(script_source("retry.lua"))
        self._release = client.register_script(script_source("release.lua"))
        self._recover = client.register_script(script_source("recover.lua"))
        self._requeue = client.register_script(script_source("requeue_failed.lua"))

    def queue(self, *, queue: str, wake: str | None, jobs: Sequence[tuple[str, Mapping[str, str]]]) -> int:
        """Queue ``jobs`` (id, hash fields) on ``queue``; one token each on ``wake`` if given."""
        batch = [[job_id, [text for pair in fields.items() for text in pair]] for job_id, fields in jobs]
        payload = json.dumps(batch, ensure_ascii=False, separators=(",", ":"))
        return int(self._queue(keys=[queue, wake or keys.WAKE_ALL], args=["1" if wake else "0", payload]))

    def take(
        self,
        *,
        manager: str,
        worker: str,
        finished: Sequence[str],
        held: int,
        limit: int,
        max_size: int,
    ) -> tuple[list[bool], list[Taken]]:
        """Finish ``finished`` and take up to ``limit`` jobs; see ``lua/take.lua``.

        :return: which of ``finished`` were still held, and the jobs taken.
        """
        reply: list[Any] = self._take(
            keys=[
                keys.queue(worker),
                keys.queue(manager),
                keys.ALL_JOBS,
                keys.ORIGIN,
                keys.wake(manager),
                keys.WAKE_ALL,
                keys.DELAYED,
            ],
            args=[manager, limit, held, max_size, *finished],
        )
        done = [flag == 1 for flag in reply[0]]
        taken = [
            Taken(job_id, source, None, fields)
            if isinstance(fields, int)
            else Taken(job_id, source, _pairs(fields))
            for job_id, source, fields in reply[1:]
        ]
        return done, taken

    def finish(self, *, worker: str, job_ids: Sequence[str]) -> list[bool]:
        """Finish ``job_ids``, guarded; which of them ``worker`` still held."""
        if not job_ids:
            return []
        reply: list[int] = self._finish(keys=[keys.queue(worker), keys.ORIGIN], args=list(job_ids))
        return [flag == 1 for flag in reply]

    def fail(
        self, *, worker: str, job_id: str, record: str, failure: str, failed_at: float, keep_hash: bool
    ) -> bool:
        """Move a held job to the failed registry; ``False`` if ``worker`` no longer held it."""
        result = self._fail(
            keys=[
                keys.queue(worker),
                keys.job(job_id),
                keys.FAILED,
                keys.failed_job(job_id),
                keys.ORIGIN,
                keys.invalid_job(job_id),
            ],
            args=[job_id, record, failure, repr(failed_at), "1" if keep_hash else "0"],
        )
        return bool(result)

    def retry(self, *, worker: str, job_id: str, fields: Mapping[str, str], delay: float) -> bool:
        """Re-store a held job and queue it again (after ``delay`` seconds)."""
        result = self._retry(
            keys=[
                keys.queue(worker),
                keys.job(job_id),
                keys.ORIGIN,
                keys.ALL_JOBS,
                keys.WAKE_ALL,
                keys.DELAYED,
            ],
            args=[job_id, repr(max(0.0, float(delay))), *_flatten(fields)],
        )
        return bool(result)

    def release(self, *, worker: str, job_ids: Sequence[str]) -> int:
        """Put held jobs back at the front of their queues; how many were held."""
        if not job_ids:
            return 0
        result = self._release(
            keys=[keys.queue(worker), keys.ORIGIN, keys.ALL_JOBS, keys.WAKE_ALL],
            args=list(job_ids),
        )
        return int(result)

    def recover(self, *, manager: str, worker: str, batch: int = RECOVER_BATCH) -> tuple[int, int]:
        """Move one batch of a dead worker's jobs back; ``(moved, still on its list)``."""
        moved, left = self._recover(
            keys=[
                keys.queue(worker),
                keys.manager_workers(manager),
                keys.ORIGIN,
                keys.queue(manager),
                keys.wake(manager),
            ],
            args=[worker, batch],
        )
        return int(moved), int(left)

    def requeue_failed(self, *, job_id: str, fields: Mapping[str, str]) -> bool:
        """Move a failed job back to its queue with ``fields`` as its new hash."""
        result = self._requeue(
            keys=[
                keys.FAILED,
                keys.failed_job(job_id),
                keys.job(job_id),
                keys.invalid_job(job_id),
                keys.ALL_JOBS,
                keys.WAKE_ALL,
            ],
            args=[job_id, *_flatten(fields)],
        )
        return bool(result)
