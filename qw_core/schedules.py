"""Periodic jobs: a :class:`Schedule` says when (a cron expression in a time zone) a job
with which data is queued; this module computes its ticks.

A **tick** is one moment a schedule fires, in seconds since the epoch (whole seconds).
Every running manager that declares a schedule may enqueue its ticks; the broker's
:meth:`~qw_core.broker.Broker.enqueue_tick` records each tick and queues its job in one
atomic step, so each tick is enqueued once however many managers try (see
:mod:`qw_core.scheduler`).

**Cron expressions** are parsed and matched by `cronsim <https://pypi.org/project/cronsim/>`_
(a small, typed, dependency-free library, maintained for Healthchecks.io's cron monitoring,
whose DST rules follow Debian's cron). Five fields (minute hour day month weekday), or six
with seconds first (``*/5 * * * * *``: every five seconds); ``L``, ``LW``, ``#`` and names
(``MON``, ``JAN``) as cronsim reads them.

**Time zones and DST**, as Debian's cron does it, decided per expression:

* an expression whose minute and hour fields are both fixed (neither starts with ``*``:
  ``30 2 * * *``, ``0 9-17 * * MON-FRI``) names **wall-clock times**. A time that the
  clocks skip (02:30 when they jump from 02:00 to 03:00) fires once, at the moment of the
  jump; a time that the clocks pass twice (when they go back) fires once, the first time.
* any other expression (``*/5 * * * *``, ``0 * * * *``, ``*/10 * * * * *``) is an
  **interval**, counted in real time: it keeps its pace through a change (a skipped
  ``0 * * * *`` hour does not fire, a repeated one fires twice, an hour apart).

What qw does differently from its peers, and why: celery beat and APScheduler run one
scheduler and enqueue every tick again for each copy that runs (two ``celery beat`` give
every task twice); dramatiq leaves cron to add-ons and Taskiq's documentation asks for
exactly one scheduler. Procrastinate, like qw, lets every worker defer periodic tasks and
deduplicates each tick in the database; qw does it in one atomic step of the broker
(a Lua script on Redis, one statement on PostgreSQL), with no leader, lock or lease to
expire half-way.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import uuid
from collections.abc import Iterator, Mapping
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cronsim import CronSim, CronSimError

from qw_core.errors import ConfigurationError
from qw_core.models import DEFAULT_QUEUE, JSON, Job, ScheduleInfo, TickState
from qw_core.namerules import misleading_character
from qw_core.policy import RETRY_META_KEY, RetryPolicy
from qw_core.taskcalls import why_not_json
from qw_core.unique import unique_of

UTC = datetime.timezone.utc

#: What a schedule does with the ticks it missed while no manager ran: ``"latest"`` enqueues
#: only the newest of them, ``"all"`` each of them (up to ``catch_up``), oldest first.
Missed = Literal["latest", "all"]

#: The most missed ticks ``missed="all"`` enqueues by default.
DEFAULT_CATCH_UP = 10
#: The most it may be set to: each is one job, and a per-second schedule down for a day
#: would otherwise queue 86,400 of them.
MAX_CATCH_UP = 1000
#: The longest schedule id accepted (it is part of a key in the backend).
MAX_ID_LENGTH = 200
#: More than any clock change (two hours, historically): see ``CronTimes._ticks``.
_LOOKAHEAD = 3 * 3600.0
#: The namespace of the job ids of ticks (see :func:`tick_job_id`).
_TICK_NAMESPACE = uuid.UUID("6b2f3c1e-4a59-4d0e-9c57-6d2b8f0a7e13")


def check_schedule_id(schedule_id: str) -> str:
    """Return ``schedule_id`` if it can name a schedule in every backend.

    :raises ConfigurationError: empty, too long, or holding whitespace or a character that
        would make it display as another id.
    """
    if not isinstance(schedule_id, str) or not schedule_id:
        raise ConfigurationError(f"a schedule id must be a non-empty string, not {schedule_id!r}")
    if len(schedule_id) > MAX_ID_LENGTH:
        raise ConfigurationError(
            f"schedule id {schedule_id[:20]!r}... is longer than {MAX_ID_LENGTH} characters"
        )
    bad = misleading_character(schedule_id)
    if bad is not None:
        raise ConfigurationError(f"schedule id {schedule_id!r} contains {bad}")
    return schedule_id


def check_tick(tick: float) -> float:
    """Return ``tick`` (seconds since the epoch) if a backend can record it.

    :raises ConfigurationError: not a finite number (NaN would compare newer than every
        later tick on one backend and older on another; infinity would end the schedule).
    """
    if isinstance(tick, bool) or not isinstance(tick, (int, float)) or not math.isfinite(tick):
        raise ConfigurationError(f"a schedule's tick must be a finite number of seconds, not {tick!r}")
    return float(tick)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):  # TypeError: not text
        raise ConfigurationError(
            f"unknown time zone {name!r}: give an IANA name such as 'Europe/Paris' or 'UTC' "
            "(no zone database on this system? pip install tzdata)"
        ) from None


def _check_cron(cron: str) -> None:
    if not isinstance(cron, str):
        raise ConfigurationError(f"a cron expression must be a string, not {cron!r}")
    try:
        CronSim(cron, datetime.datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ConfigurationError(
            f"bad cron expression {cron!r}: {exc} (5 fields, minute hour day month weekday, "
            "or 6 with seconds first)"
        ) from None


def _queue(queue: str | None) -> str | None:
    if queue is None or queue == DEFAULT_QUEUE:
        return None
    if not isinstance(queue, str) or not queue.strip():
        raise ConfigurationError(f"a schedule's queue must be a queue's name, not {queue!r}")
    return queue


def _meta(value: Mapping[str, JSON]) -> dict[str, JSON]:
    if not isinstance(value, Mapping):  # dict() would take a list of pairs, or fail with a riddle
        raise ConfigurationError(f"a schedule's meta must be an object (a mapping), not {value!r}")
    if RETRY_META_KEY in value:  # refused now, not ignored with a warning at each failure
        RetryPolicy().with_overrides(value[RETRY_META_KEY])
    return dict(value)


@attrs.frozen
class Schedule:
    """A job queued at each tick of a cron expression: ``Schedule("*/5 * * * *", data={...})``.

    :param cron: when: 5 fields (minute hour day month weekday), or 6 with seconds first.
    :param data: the job data of each tick (JSON).
    :param id: the schedule's name, the same in every manager that declares it (its last
        tick is kept under it). Default: derived from the cron expression, data, queue and
        time zone, so changing any of them makes another schedule.
    :param queue: the named queue its jobs go to (``None`` or ``"default"``: the shared queue).
    :param timezone: the IANA zone its cron expression reads in (``"Europe/Paris"``).
    :param missed: after a time with no manager running, ``"latest"`` (the default)
        enqueues only the newest missed tick, ``"all"`` each missed tick, oldest first,
        the newest ``catch_up`` of them at most.
    :param catch_up: the most missed ticks ``missed="all"`` enqueues (1 to 1000).
    :param meta: job metadata of each tick's job (``retry``, ``timeout``...), besides the
        ``schedule`` and ``tick`` qw adds.
    :raises ConfigurationError: a bad expression, zone, id, setting, or data that is not JSON.
    """

    cron: str
    data: JSON = attrs.field(factory=dict, kw_only=True)
    id: str = attrs.field(default="", kw_only=True)
    queue: str | None = attrs.field(default=None, kw_only=True, converter=_queue)
    timezone: str = attrs.field(default="UTC", kw_only=True)
    missed: Missed = attrs.field(default="latest", kw_only=True)
    catch_up: int = attrs.field(default=DEFAULT_CATCH_UP, kw_only=True)
    meta: Mapping[str, JSON] = attrs.field(factory=dict, kw_only=True, converter=_meta)

    def __attrs_post_init__(self) -> None:
        _check_cron(self.cron)
        _zone(self.timezone)
        reason = why_not_json(self.data, "data") or why_not_json(dict(self.meta), "meta")
        if reason is not None:
            raise ConfigurationError(f"schedule {self.cron!r}: {reason}, which is not JSON")
        if self.missed not in ("latest", "all"):
            raise ConfigurationError(f"missed must be 'latest' or 'all', not {self.missed!r}")
        if isinstance(self.catch_up, bool) or not isinstance(self.catch_up, int):
            raise ConfigurationError(f"catch_up must be a whole number, not {self.catch_up!r}")
        if not 1 <= self.catch_up <= MAX_CATCH_UP:
            raise ConfigurationError(f"catch_up must be from 1 to {MAX_CATCH_UP}, not {self.catch_up}")
        if self.id == "":
            object.__setattr__(self, "id", f"cron:{self.digest()[:12]}")
        check_schedule_id(self.id)
        _check_unique_meta(self)

    def digest(self) -> str:
        """A hash of what the schedule does (not of its id): two managers declaring one id
        with different digests disagree about it."""
        text = json.dumps(
            [self.cron, self.data, self.queue, self.timezone, self.missed, self.catch_up, dict(self.meta)],
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def declaration(self) -> str:
        """The schedule as a manager declares it in the backend (JSON text): what ``qw
        schedules`` shows, and the digest that tells declarations apart."""
        return json.dumps(
            {
                "cron": self.cron,
                "timezone": self.timezone,
                "queue": self.queue,
                "missed": self.missed,
                "catch_up": self.catch_up,
                "digest": self.digest(),
            },
            separators=(",", ":"),
        )

    @property
    def times(self) -> CronTimes:
        """Its ticks, computed in its zone."""
        return CronTimes(self.cron, self.timezone)

    def job(self, tick: float, *, queued_at: float | None = None) -> Job:
        """The job of ``tick``: its id derived from the schedule's id and the tick (see
        :func:`tick_job_id`), so that a retried enqueue cannot queue a second one."""
        return Job(
            id=tick_job_id(self.id, tick),
            data=self.data,
            queue=self.queue,
            queued_at=queued_at,
            meta={**self.meta, "schedule": self.id, "tick": tick},
        )


def _check_unique_meta(schedule: Schedule) -> None:
    """Refuse a ``meta["unique"]`` that no tick could be queued with, now rather than
    at every tick (where it would fail each one, logged and backed off, for ever)."""
    job = schedule.job(0.0)
    try:
        unique_of(job)
    except ConfigurationError as exc:
        reason = str(exc).removeprefix(f"job {job.id}: ")
        raise ConfigurationError(f"schedule {schedule.id!r}: {reason}") from None


def tick_job_id(schedule_id: str, tick: float) -> str:
    """The job id of ``schedule_id``'s tick ``tick``: a UUID (version 5) of both, the same
    in every manager, so the job of one tick has one id wherever it is made."""
    return str(uuid.uuid5(_TICK_NAMESPACE, f"{schedule_id}\x00{tick!r}"))


def schedule_from_dict(raw: object, where: str = "a schedule") -> Schedule:
    """A :class:`Schedule` from a JSON object (a schedules file's entry).

    :raises ConfigurationError: not an object, an unknown key, or a bad value (the message
        says which, and where).
    """
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{where} must be a JSON object with a 'cron' key, not {raw!r}")
    known = {"id", "cron", "data", "queue", "timezone", "missed", "catch_up", "meta"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigurationError(
            f"{where} has unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    if "cron" not in raw:
        raise ConfigurationError(f"{where} has no 'cron' key")
    try:
        return Schedule(**raw)
    except TypeError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


# -- computing ticks -----------------------------------------------------------------------


def _wall_clock(cron: str) -> bool:
    """Whether ``cron`` names wall-clock times (see the module's docstring): its minute and
    hour fields are both fixed (cronsim's and Debian cron's rule)."""
    fields = cron.split()
    minute, hour = (fields[0], fields[1]) if len(fields) == 5 else (fields[1], fields[2])
    return not minute.startswith("*") and not hour.startswith("*")


def _imaginary(local: datetime.datetime) -> bool:
    """Whether aware ``local`` is a wall time its zone skips (it does not round-trip)."""
    return local != local.astimezone(UTC).astimezone(local.tzinfo)


class CronTimes:
    """The ticks of a cron expression in a time zone, as seconds since the epoch.

    :param cron: the expression (checked by :class:`Schedule`).
    :param timezone: an IANA zone name.
    """

    def __init__(self, cron: str, timezone: str) -> None:
        self.cron = cron
        self.zone = _zone(timezone)
        self.wall_clock = _wall_clock(cron)

    def after(self, moment: float) -> float | None:
        """The first tick strictly after ``moment``; ``None`` if there is none in 50 years."""
        return next(self._ticks(moment, reverse=False), None)

    def upto(self, moment: float) -> Iterator[float]:
        """The ticks at or before ``moment``, newest first."""
        return self._ticks(moment, reverse=True)

    def _ticks(self, moment: float, *, reverse: bool) -> Iterator[float]:
        # A tick is a whole second: start from the whole second at (reverse) or after moment.
        start_at = datetime.datetime.fromtimestamp(moment, UTC).astimezone(self.zone)
        if reverse and self.wall_clock:
            # After the clocks went back, wall times later than the one shown now were shown
            # already (the first time round): start from wall times a while ahead, and keep
            # only the ticks that have come.
            start_at = datetime.datetime.fromtimestamp(moment + _LOOKAHEAD, UTC).astimezone(self.zone)
        if reverse:
            # cronsim's reverse iteration yields ticks before its start, at the start itself
            # or not depending on its version (2.7 never, 2.8 with microseconds): start a
            # second later and keep the ticks at or before moment (below).
            start_at += datetime.timedelta(seconds=1)
        start = start_at.replace(tzinfo=None) if self.wall_clock else start_at
        last: float | None = None
        try:
            for found in CronSim(self.cron, start, reverse=reverse):
                tick = self._instant(found)
                if reverse:
                    ok = tick <= moment and (last is None or tick < last)
                else:
                    ok = tick > moment and (last is None or tick > last)
                if ok:
                    last = tick
                    yield tick
        except StopIteration:  # cronsim gave up: no tick within 50 years
            return

    def _instant(self, found: datetime.datetime) -> float:
        """The moment a tick cronsim found happens: for a wall-clock time (naive, in the
        zone), the first time the clocks show it, or the moment they jump past it."""
        if found.tzinfo is not None:
            return found.astimezone(UTC).timestamp()
        local = found.replace(tzinfo=self.zone, fold=0)
        if _imaginary(local):
            # The clocks jump over it: it fires as they jump, the first real minute after.
            probe = found.replace(second=0)
            while _imaginary(probe.replace(tzinfo=self.zone, fold=0)):
                probe += datetime.timedelta(minutes=1)
            local = probe.replace(tzinfo=self.zone, fold=0)
        return local.astimezone(UTC).timestamp()


def due_ticks(schedule: Schedule, *, since: float, now: float) -> list[float]:
    """The ticks of ``schedule`` after ``since`` and up to ``now`` that are to be enqueued,
    oldest first: the newest one (``missed="latest"``), or the newest ``catch_up`` ones."""
    most = 1 if schedule.missed == "latest" else schedule.catch_up
    found: list[float] = []
    for tick in schedule.times.upto(now):
        if tick <= since or len(found) == most:
            break
        found.append(tick)
    found.reverse()
    return found


def describe_tick(tick: float | None, timezone: str = "UTC") -> str:
    """``tick`` as an ISO 8601 time in ``timezone`` (for logs and ``qw schedules``)."""
    if tick is None:
        return "-"
    return datetime.datetime.fromtimestamp(tick, UTC).astimezone(_zone(timezone)).isoformat()


def listed_schedules(
    declared: Mapping[str, Mapping[str, str]], states: Mapping[str, TickState], now: float
) -> list[ScheduleInfo]:
    """What :meth:`Broker.schedules <qw_core.broker.Broker.schedules>` lists: one entry per
    schedule id and way it is declared (``declared``: manager → id → declaration), with
    its next tick after ``now`` and its last enqueued tick (``states``). A declaration
    that is not one qw wrote is left out."""
    ways: dict[str, dict[str, tuple[dict[str, object], list[str]]]] = {}
    for manager, found in declared.items():
        for schedule_id, text in found.items():
            try:
                decl = json.loads(text)
                key = str(decl["digest"])
                str(decl["cron"]), str(decl["timezone"])
            except (ValueError, TypeError, KeyError):
                continue
            ways.setdefault(schedule_id, {}).setdefault(key, (decl, []))[1].append(manager)
    listed: list[ScheduleInfo] = []
    for schedule_id in sorted(ways):
        state = states.get(schedule_id)
        for decl, managers in sorted(ways[schedule_id].values(), key=lambda way: sorted(way[1])):
            cron, timezone = str(decl["cron"]), str(decl["timezone"])
            try:
                next_run = CronTimes(cron, timezone).after(now)
            except (CronSimError, ConfigurationError, ValueError):  # a zone this host lacks, say
                next_run = None
            queue = decl.get("queue")
            catch_up = decl.get("catch_up")
            listed.append(
                ScheduleInfo(
                    id=schedule_id,
                    cron=cron,
                    timezone=timezone,
                    queue=queue if isinstance(queue, str) else None,
                    next_run=next_run,
                    last_run=None if state is None else state.tick,
                    last_manager=None if state is None else state.manager,
                    missed=str(decl.get("missed", "latest")),
                    catch_up=catch_up if isinstance(catch_up, int) else 1,
                    declared_by=tuple(sorted(managers)),
                    conflict=len(ways[schedule_id]) > 1,
                )
            )
    return listed
