"""The manager's scheduler: a thread that enqueues the ticks of its schedules.

Every running manager that declares a schedule runs one, with no leader, lock or extra
process: each tick is enqueued once across all of them because the broker checks,
records and queues it in one atomic step (:meth:`Periodic.enqueue_tick
<qw_core.broker.Periodic.enqueue_tick>`), keyed on the schedule and the tick. A manager
that dies at any point of a tick leaves either nothing done (another manager enqueues the
tick) or all of it; a call retried after a timeout finds the tick recorded and changes
nothing.

**Whose clock.** Ticks are due by the backend's clock (:meth:`Periodic.now
<qw_core.broker.Periodic.now>`, Redis's ``TIME``), never a host's: managers whose hosts'
clocks disagree by minutes agree on when a tick is due. This thread only measures how long
to sleep, on the monotonic clock.

**What is due.** The ticks after the schedule's last enqueued tick, up to the backend's
time now: the newest one only (``missed="latest"``, the default) or the newest
``catch_up`` ones, oldest first (``missed="all"``). So after a time when no manager ran,
a schedule enqueues its latest tick (or a bounded catch-up) rather than a flood. A schedule
that never had a tick enqueued starts with its first tick after this thread started.

**Declarations.** Every heartbeat interval the thread declares its schedules in the
backend, for a heartbeat TTL (:meth:`Periodic.declare_schedules
<qw_core.broker.Periodic.declare_schedules>`): ``qw schedules`` lists only what a running
manager declares, so a schedule removed from the code stops, and disappears from the list
once the last manager declaring it stopped (at once if it stopped cleanly: the thread
withdraws its declarations as it ends). Managers that declare one id in different ways
(during a rolling deploy, say) each enqueue the ticks of their own definition, each tick
time at most once; each logs a warning, and ``qw schedules`` marks the conflict.

Like the heartbeat and reaper threads (:mod:`qw_core.liveness`), it never dies of an
error: it logs it (once per streak), backs off, reads the schedules' state again, and
goes on. A schedule whose tick fails for a reason of its own (its queue's key is another
program's, say) is logged and tried again at the next pass, while the others tick on; so
do all of them when declaring fails for a reason of its own (they are then not listed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from qw_core.backoff import Backoff
from qw_core.broker import BrokerFactory, Periodic
from qw_core.errors import BrokerUnavailable, ConfigurationError, QwError
from qw_core.schedules import Schedule, describe_tick, due_ticks

log = logging.getLogger("qw.manager")

#: Seconds the thread sleeps past a tick's due time, so it wakes with the tick due.
_LATE = 0.002


def check_schedules(schedules: Sequence[Schedule]) -> tuple[Schedule, ...]:
    """``schedules``, each id once.

    :raises ConfigurationError: an id given twice (with the fix).
    """
    seen: dict[str, Schedule] = {}
    for schedule in schedules:
        if not isinstance(schedule, Schedule):
            raise ConfigurationError(f"a schedule must be a qw_core.schedules.Schedule, not {schedule!r}")
        if schedule.id in seen and seen[schedule.id] != schedule:
            raise ConfigurationError(
                f"schedule id {schedule.id!r} is declared twice in this manager, differently: give each "
                "its own id=..."
            )
        seen[schedule.id] = schedule
    return tuple(seen.values())


class Scheduler:
    """The scheduler thread of one manager.

    :param factory: opens the thread's own broker (a broker serves one thread).
    :param manager: the manager's name.
    :param schedules: what it runs (ids unique: :func:`check_schedules`).
    :param heartbeat: seconds between two declarations, and the longest sleep.
    :param ttl: seconds a declaration lasts (the heartbeat TTL).
    """

    def __init__(
        self,
        factory: BrokerFactory,
        *,
        manager: str,
        schedules: Sequence[Schedule],
        heartbeat: float,
        ttl: float,
    ) -> None:
        self._factory = factory
        self.manager = manager
        self.schedules = check_schedules(schedules)
        self.heartbeat = heartbeat
        self.ttl = ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[str, float | None] | None = None  # id -> last enqueued tick, read back
        self._started: float | None = None  # the backend's time at the first pass
        self._declare_at = 0.0  # when to declare next (monotonic)
        self._conflicts: set[str] = set()  # ids already warned about
        self._failing: set[str] = set()  # ids whose last tick failed (see _schedule_failed)
        self._undeclared = False  # whether the last declaration failed (see _declare)
        #: Ticks this scheduler enqueued (for tests and logs).
        self.enqueued = 0

    # -- control ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._loop, name=f"qw-scheduler-{self.manager}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop enqueueing, withdraw the declarations, and wait (briefly) for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)

    # -- the thread ------------------------------------------------------------------

    def _loop(self) -> None:
        backoff = Backoff(first=min(0.1, self.heartbeat), cap=self.heartbeat)
        broker: Periodic | None = None
        try:
            while not self._stop.is_set():
                try:
                    if broker is None:
                        broker = self._factory()
                    wait = self.step(broker)
                except Exception as exc:
                    self._trouble(exc, backoff)
                    self._last = None  # read the last ticks again once it works
                    wait = backoff.next()
                else:
                    if backoff.failures:
                        log.info("manager %s: the scheduler works again", self.manager)
                    backoff.reset()
                self._stop.wait(wait)
        finally:
            self._withdraw(broker)

    def _trouble(self, exc: Exception, backoff: Backoff) -> None:
        if backoff.failures:
            return  # said once per streak
        if isinstance(exc, BrokerUnavailable):
            log.warning("manager %s: the scheduler failed, retrying: %s", self.manager, exc)
        else:
            log.error("manager %s: the scheduler failed, retrying", self.manager, exc_info=exc)

    def _withdraw(self, broker: Periodic | None) -> None:
        """Withdraw the declarations (a manager that stops no longer runs them), and close."""
        if broker is None:
            return
        try:
            broker.declare_schedules(manager=self.manager, declarations={}, ttl=self.ttl)
        except Exception as exc:  # they lapse with their TTL anyway
            log.warning(
                "manager %s: withdrawing its schedules failed (they lapse by themselves): %s",
                self.manager,
                exc,
            )
        finally:
            broker.close()

    def step(self, broker: Periodic) -> float:
        """One pass: declare if due, enqueue every due tick; seconds until the next is due
        (at most a heartbeat interval)."""
        now = broker.now()
        if self._started is None:
            self._started = now
        if self._last is None or time.monotonic() >= self._declare_at:
            self._declare(broker)
        assert self._last is not None
        wait = self.heartbeat
        for schedule in self.schedules:
            try:
                self._enqueue_due(broker, schedule, now)
            except BrokerUnavailable:
                raise  # no schedule can tick: the loop backs off
            except Exception as exc:
                self._schedule_failed(schedule, exc)
            else:
                if schedule.id in self._failing:
                    self._failing.discard(schedule.id)
                    log.info("manager %s: schedule %s ticks again", self.manager, schedule.id)
            following = schedule.times.after(now)
            if following is not None:
                wait = min(wait, following - now + _LATE)
        return max(0.0, wait)

    def _enqueue_due(self, broker: Periodic, schedule: Schedule, now: float) -> None:
        """Enqueue ``schedule``'s due ticks, oldest first (stopping at the first that fails:
        a newer tick recorded would make it never be enqueued)."""
        assert self._last is not None
        assert self._started is not None
        since = self._last.get(schedule.id)
        for tick in due_ticks(schedule, since=self._started if since is None else since, now=now):
            if (last := self._last.get(schedule.id)) is not None and tick <= last:
                continue  # another manager's reply moved past it
            self._enqueue(broker, schedule, tick, now)

    def _schedule_failed(self, schedule: Schedule, exc: Exception) -> None:
        """Log (once until it ticks again) that ``schedule``'s tick failed for a reason of
        its own (its queue's key is another program's, its job is too large...): its tick
        is tried again at the next pass, and the other schedules tick meanwhile, as they
        would not if this stopped the pass or backed the thread off."""
        if schedule.id in self._failing:
            return
        self._failing.add(schedule.id)
        log.error(
            "manager %s: schedule %s: enqueueing its tick failed, retrying: %s",
            self.manager,
            schedule.id,
            exc,
            exc_info=None if isinstance(exc, QwError) else exc,
        )

    def _declare(self, broker: Periodic) -> None:
        """Declare the schedules, and read their last ticks. Declarations only list them
        (``qw schedules``): when declaring fails for a reason of its own (another program's
        key where they go, say), the last ticks are read alone and the schedules tick on."""
        try:
            states = broker.declare_schedules(
                manager=self.manager,
                declarations={schedule.id: schedule.declaration() for schedule in self.schedules},
                ttl=self.ttl,
            )
        except BrokerUnavailable:
            raise  # nothing can tick: the loop backs off
        except Exception as exc:
            if not self._undeclared:
                log.error(
                    "manager %s: declaring its schedules failed (they tick on, unlisted), retrying: %s",
                    self.manager,
                    exc,
                    exc_info=None if isinstance(exc, QwError) else exc,
                )
            self._undeclared = True
            found = broker.tick_states([schedule.id for schedule in self.schedules])
            self._last = {schedule.id: None for schedule in self.schedules}
            self._last.update({i: state.tick for i, state in found.items() if i in self._last})
        else:
            if self._undeclared:
                self._undeclared = False
                log.info("manager %s: its schedules are declared again", self.manager)
            self._last = {i: None if state is None else state.tick for i, state in states.items()}
            self._warn_conflicts(broker)
        self._declare_at = time.monotonic() + self.heartbeat

    def _warn_conflicts(self, broker: Periodic) -> None:
        """Warn (once per id) when a running manager declares one of these ids differently."""
        mine = {schedule.id: schedule.declaration() for schedule in self.schedules}
        for other, found in broker.schedule_declarations().items():
            if other == self.manager:
                continue
            for schedule_id, text in found.items():
                if schedule_id in mine and text != mine[schedule_id] and schedule_id not in self._conflicts:
                    self._conflicts.add(schedule_id)
                    log.warning(
                        "manager %s: manager %s declares schedule %s differently; each enqueues the ticks "
                        "of its own definition (each tick time once): give each definition its own id, "
                        "or run one version of the code",
                        self.manager,
                        other,
                        schedule_id,
                    )

    def _enqueue(self, broker: Periodic, schedule: Schedule, tick: float, now: float) -> None:
        job = schedule.job(tick, queued_at=now)
        result = broker.enqueue_tick(schedule.id, tick, job, manager=self.manager)
        assert self._last is not None
        self._last[schedule.id] = result.last.tick
        if result.enqueued:
            self.enqueued += 1
            log.info(
                "manager %s: schedule %s: tick %s enqueued as job %s",
                self.manager,
                schedule.id,
                describe_tick(tick, schedule.timezone),
                result.last.job_id,  # a unique job's key holder, if another job holds it
            )
