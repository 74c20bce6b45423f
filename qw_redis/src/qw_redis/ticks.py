"""The Redis backend's part of periodic jobs: the backend's clock, ticks and declarations.

:class:`~qw_redis.broker.RedisBroker` delegates its schedule methods here (at its error
boundary). The atomic step is ``lua/tick.lua``; the keys are ``qw:tick:<id>``,
``qw:declared:<m>`` and ``qw:schedulers`` (see :mod:`qw_redis.keys`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis

from qw_core.errors import InvalidJob
from qw_core.models import DEFAULT_QUEUE, Job, TickResult, TickState
from qw_core.schedules import check_schedule_id, check_tick
from qw_core.unique import unique_of
from qw_redis import codec, keys
from qw_redis.scripts import Scripts


def server_time(client: redis.Redis) -> float:
    """Redis's clock (``TIME``), seconds since the epoch."""
    seconds, micros = client.time()
    return int(seconds) + int(micros) / 1_000_000


def _state(parts: Sequence[str]) -> TickState:
    tick, manager, at, job_id = parts
    return TickState(tick=float(tick), manager=manager, at=float(at or 0), job_id=job_id)


def _read_state(parts: Sequence[str]) -> TickState | None:
    """:func:`_state`, or ``None`` for a record qw did not write (not a number: the next
    tick replaces it, since tick.lua counts it as no tick)."""
    try:
        return _state(parts)
    except ValueError:
        return None


def enqueue_tick(
    scripts: Scripts, schedule_id: str, tick: float, job: Job, *, manager: str, max_size: int
) -> TickResult:
    """See :meth:`Broker.enqueue_tick <qw_core.broker.Broker.enqueue_tick>` (names checked by the caller)."""
    check_schedule_id(schedule_id)
    tick = check_tick(tick)
    if job.worker is not None or job.manager is not None:
        raise InvalidJob(f"job {job.id} of a tick names a manager or worker: a tick's job goes to a queue")
    codec.check_new_id(job.id)
    unique = unique_of(job)
    if unique is not None:
        codec.check_new_id(unique.key or "")
    stored = codec.encode_job(job, max_size=max_size)
    queue = None if job.queue == DEFAULT_QUEUE else job.queue
    enqueued, last = scripts.tick(
        schedule_id=schedule_id,
        tick=tick,
        manager=manager,
        job_id=job.id,
        origin=keys.origin(queue=queue),
        stored=stored,
        unique=unique,
    )
    return TickResult(enqueued=enqueued, last=_state(last))


def declare(
    scripts: Scripts, *, manager: str, declarations: Mapping[str, str], ttl: float
) -> dict[str, TickState | None]:
    """See :meth:`Broker.declare_schedules <qw_core.broker.Broker.declare_schedules>`."""
    for schedule_id in declarations:
        check_schedule_id(schedule_id)
    found = scripts.declare(manager=manager, declarations=declarations, ttl_ms=max(1, round(ttl * 1000)))
    return {i: (_read_state(found[i]) if i in found else None) for i in declarations}


def declarations(client: redis.Redis, schema: keys.KeySchema = keys.SINGLE_NODE) -> dict[str, dict[str, str]]:
    """See :meth:`Broker.schedule_declarations <qw_core.broker.Broker.schedule_declarations>`:
    what each manager in ``qw:schedulers`` declares, for those whose declarations are live."""
    if client.type(schema.SCHEDULERS) != "set":
        return {}
    managers = sorted(str(m) for m in client.smembers(schema.SCHEDULERS))
    pipe = client.pipeline(transaction=False)
    for manager in managers:
        pipe.hgetall(schema.declared(manager))
    found: dict[str, dict[str, str]] = {}
    for manager, fields in zip(managers, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(fields, dict) and fields:  # an error (a wrong type) counts as none
            found[manager] = {str(k): str(v) for k, v in fields.items()}
    return found


def states(
    client: redis.Redis, schedule_ids: Sequence[str], schema: keys.KeySchema = keys.SINGLE_NODE
) -> dict[str, TickState]:
    """See :meth:`Broker.tick_states <qw_core.broker.Broker.tick_states>`."""
    pipe = client.pipeline(transaction=False)
    for schedule_id in schedule_ids:
        pipe.hmget(schema.tick(schedule_id), "tick", "manager", "at", "job")
    found: dict[str, TickState] = {}
    for schedule_id, fields in zip(schedule_ids, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(fields, list) and fields[0] is not None:
            state = _read_state([str(part or "") for part in fields])
            if state is not None:
                found[schedule_id] = state
    return found
