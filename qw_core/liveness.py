"""Liveness: the manager's heartbeat and its reaper, each on a thread of its own.

A worker that dies is normally noticed by its manager, which sees the process exit and
puts its jobs back. That fails when the manager dies too (the host crashes, the process
group is killed) or when a worker is paused or cut off while its process lives on. So:

* **Heartbeats.** The manager, which runs no jobs (a target that hangs or hogs the GIL
  cannot stop it), refreshes every ``heartbeat`` seconds a heartbeat that expires after
  ``ttl`` seconds for itself and for each of its workers whose process is running (a
  stopped process, SIGSTOP or a debugger, gets none: it is not working). Each heartbeat
  carries a token unique to one start of the process, so a process that reuses a name or
  pid is not taken for the old one, and a paused process that comes back is told that
  its heartbeat lapsed (:meth:`Membership.beat`).
* **The reaper.** Every manager runs one, every ``reap_interval`` seconds, throttled by a
  lease in the broker so that only one of them works per interval. It recovers every
  worker whose heartbeat has lapsed (the broker checks and moves atomically, see
  :meth:`Membership.reap`), counting recoveries per job so a job that kills its worker every
  time ends in the failed registry instead of looping.
* **Sessions.** A backend that knows when a process's connection is gone
  (``capabilities.session_liveness``: PostgreSQL's locks die with the connection) also
  lets the reaper recover, at its next round, a worker whose session and whose manager's
  sessions have all ended: the brokers this module's threads and the manager beat on are
  the manager's sessions, the one a worker takes with is the worker's (see
  :class:`~qw_core.broker.Membership`). Nothing here changes for it.
* **After an outage** (a broker call of the manager's failing as unreachable, out of
  memory, busy with a script), the reaper judges nobody dead for one ``ttl``: while the
  broker refused them no manager could refresh its heartbeats, so lapsed heartbeats then
  say nothing about who is alive. Nor does it reap while this
  manager's own last heartbeat is older than one interval (the process was paused, or
  the heartbeat thread is behind): it re-registers itself and vouches for its workers
  first, so it never takes its own live workers for dead.
* **Neither thread ever dies of an error**: each logs it (with a traceback for anything
  but an outage, once per streak), backs off, and goes on.

How the peers do it, and why qw differs: Sidekiq's reliable fetch and dramatiq keep a
heartbeat per consumer process that the process itself refreshes, so a consumer stuck in
a long C call (or holding the GIL) looks dead and loses its jobs to a reaper; rq's
abandoned-job reaper needs the worker's own heartbeat too. qw's workers write nothing
for liveness; their manager vouches for them while their process runs.

Each thread opens its own broker with the manager broker's factory, since a broker
serves one thread, and a slow reap (a dead worker holding many jobs) never delays a
heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import attrs

from qw_core.backoff import Backoff
from qw_core.broker import BrokerFactory, Membership, Reaped
from qw_core.errors import BrokerUnavailable, ConfigurationError
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits

log = logging.getLogger("qw.manager")

_T = TypeVar("_T")

#: Production defaults: a heartbeat every 5 s, presumed dead after 30 s without one.
DEFAULT_HEARTBEAT = 5.0
DEFAULT_TTL = 30.0
#: How often a job may be put back after its worker died holding it before it is
#: failed (kind ``"crashed"``) instead.
DEFAULT_MAX_RECOVERIES = 3


@attrs.frozen(kw_only=True)
class LivenessSettings:
    """How often a manager beats and reaps.

    :param heartbeat: seconds between two heartbeats.
    :param ttl: seconds a heartbeat lasts; a process without one for this long is dead.
        Must exceed ``heartbeat`` (three times over or more is wise: a refresh can be
        late when the broker is slow).
    :param reap_interval: seconds between two reaps; ``None``: the heartbeat interval.
    :param max_recoveries: how often a job may be put back after a crash before it is
        failed as a poison job; ``None``: always put it back.
    :param failed_limits: the failed registry's bounds, kept when a poison job goes there.
    """

    heartbeat: float = DEFAULT_HEARTBEAT
    ttl: float = DEFAULT_TTL
    reap_interval: float | None = None
    max_recoveries: int | None = DEFAULT_MAX_RECOVERIES
    failed_limits: FailedLimits = DEFAULT_FAILED_LIMITS

    def __attrs_post_init__(self) -> None:
        if not self.heartbeat > 0:
            raise ConfigurationError(f"the heartbeat interval must be positive, not {self.heartbeat!r}")
        if not self.ttl > self.heartbeat:
            raise ConfigurationError(
                f"the heartbeat TTL ({self.ttl}s) must exceed the heartbeat interval ({self.heartbeat}s)"
            )
        if self.reap_interval is not None and not self.reap_interval > 0:
            raise ConfigurationError(f"the reap interval must be positive, not {self.reap_interval!r}")
        if self.max_recoveries is not None and self.max_recoveries < 0:
            raise ConfigurationError(f"max_recoveries must be 0 or more, not {self.max_recoveries!r}")

    @property
    def reap_every(self) -> float:
        """Seconds between two reaps."""
        return self.heartbeat if self.reap_interval is None else self.reap_interval


def process_working(pid: int) -> bool:
    """Whether process ``pid`` can be running jobs: not stopped (SIGSTOP, SIGTSTP, a
    debugger) and not a zombie (exited, not yet reaped by its parent).

    Reads ``/proc/<pid>/stat`` (Linux); elsewhere, or if it cannot be read, ``True``
    (there, a stopped worker keeps its heartbeat).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    # "pid (comm) state ...": comm may contain spaces and parentheses, so split at the last ')'.
    end = stat.rfind(b")")
    return stat[end + 2 : end + 3] not in (b"T", b"t", b"Z", b"X")


class Liveness:
    """The heartbeat and reaper threads of one manager.

    :param factory: opens a broker for each thread.
    :param manager: the manager's name.
    :param token: the token of this start of the manager.
    :param settings: intervals and limits.
    :param workers: returns the running workers to vouch for now: name → token.
    :param on_reaped: called (on the reaper thread) for each worker the reaper recovered.
    :param running: returns what each running worker runs now and since when (worker →
        job id → seconds since the epoch), written beside its heartbeat for
        :meth:`Inspector.job_status`; ``None``: nothing is written.
    :param begun: returns how many jobs this manager's workers have begun since it started
        (read from the counters they keep in shared memory); after each heartbeat, the jobs
        begun since the last note are added to the broker's count of the minute
        (:meth:`Membership.note_jobs_run`): one write per heartbeat, none per job. ``None``:
        nothing is counted.
    """

    def __init__(
        self,
        factory: BrokerFactory,
        *,
        manager: str,
        token: str,
        settings: LivenessSettings,
        workers: Callable[[], Mapping[str, str]],
        on_reaped: Callable[[Reaped], None],
        running: Callable[[], Mapping[str, Mapping[str, float]]] | None = None,
        begun: Callable[[], int] | None = None,
    ) -> None:
        self._factory = factory
        self._running = running
        self._begun = begun
        self._begun_noted = 0  # the jobs begun that the broker has counted
        self.manager = manager
        self.token = token
        self.settings = settings
        self._workers = workers
        self._on_reaped = on_reaped
        self._stop = threading.Event()
        self._trouble_at = -float("inf")
        self._beat_at = -float("inf")  # when the last heartbeat was written
        self._threads: list[threading.Thread] = []
        self._local = threading.local()  # each thread's own broker
        #: Held while a heartbeat is computed and sent. The manager takes it to put back an
        #: exited worker's jobs, so a beat already in flight for that worker (which would
        #: register it again) lands before the clean-up, never after it.
        self.beat_lock = threading.Lock()

    # -- control ---------------------------------------------------------------------

    def start(self) -> None:
        """Start beating and reaping."""
        for name, loop in (("heartbeat", self._beat_loop), ("reaper", self._reap_loop)):
            thread = threading.Thread(target=loop, name=f"qw-{name}-{self.manager}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads and wait (briefly) for them."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.settings.ttl)

    def note_trouble(self) -> None:
        """The broker could not be reached just now: nobody is judged dead for one TTL."""
        self._trouble_at = time.monotonic()

    @property
    def troubled(self) -> bool:
        """Whether a broker call failed less than one TTL ago."""
        return time.monotonic() - self._trouble_at < self.settings.ttl

    @property
    def beat_at(self) -> float:
        """When (``time.monotonic()``) the last heartbeat that was written began."""
        return self._beat_at

    @property
    def beat_is_fresh(self) -> bool:
        """Whether this manager's last heartbeat was written less than an interval ago
        (with some slack for a slow broker)."""
        return time.monotonic() - self._beat_at < 1.5 * self.settings.heartbeat

    @property
    def may_reap(self) -> bool:
        """Whether lapsed heartbeats mean anything now: no trouble for a TTL, and this
        manager's own heartbeat is current."""
        return not self.troubled and self.beat_is_fresh

    # -- the threads -----------------------------------------------------------------

    def _call(self, what: str, call: Callable[[Membership], _T], backoff: Backoff) -> tuple[bool, _T | None]:
        """Run ``call`` on this thread's broker (opened on first use): (whether it worked,
        its result).

        An error counts in ``backoff`` and is logged once per streak, with its traceback
        unless it is an outage; an outage also notes trouble (see :attr:`troubled`). So
        does the end of a streak of errors, and a call that took longer than a heartbeat
        interval (a paused or stalled broker answers late rather than failing): every
        manager's heartbeat may have lapsed meanwhile, and from that moment each gets a
        full TTL to beat again before anyone is judged dead.
        """
        started = time.monotonic()
        try:
            if self._broker_of_thread() is None:
                self._local.broker = self._factory()
            result = call(self._local.broker)
        except Exception as exc:
            outage = isinstance(exc, BrokerUnavailable)
            if outage:
                self.note_trouble()
            if backoff.failures == 0:
                if outage:
                    log.warning("manager %s: %s failed, retrying: %s", self.manager, what, exc)
                else:
                    log.error("manager %s: %s failed, retrying", self.manager, what, exc_info=exc)
            backoff.failures += 1
            return False, None
        if backoff.failures:
            log.info("manager %s: %s works again", self.manager, what)
        if backoff.failures or time.monotonic() - started > self.settings.heartbeat:
            self.note_trouble()  # the trouble ends now: everyone gets a full TTL to beat again
        backoff.reset()
        return True, result

    def _broker_of_thread(self) -> Membership | None:
        return getattr(self._local, "broker", None)

    def _close_broker(self) -> None:
        broker = self._broker_of_thread()
        if broker is not None:
            self._local.broker = None
            broker.close()

    def _beat_loop(self) -> None:
        settings = self.settings
        backoff = Backoff(first=min(0.1, settings.heartbeat), cap=settings.heartbeat)
        counting = Backoff(first=settings.heartbeat, cap=settings.heartbeat)
        try:
            while not self._stop.is_set():
                with self.beat_lock:
                    started = time.monotonic()
                    ok, changed = self._call(
                        "the heartbeat",
                        lambda broker: broker.beat(
                            manager=self.manager,
                            token=self.token,
                            workers=self._workers(),
                            ttl=settings.ttl,
                            running=None if self._running is None else self._running(),
                        ),
                        backoff,
                    )
                if not ok or changed is None:
                    self._stop.wait(backoff.wait())
                    continue
                self._beat_at = started
                for name, previous in changed.items():
                    self._report(name, previous)
                self._note_begun(counting)
                self._stop.wait(settings.heartbeat)
            self._note_begun(counting)  # the last jobs' (the manager stops its workers first)
        finally:
            self._close_broker()

    def _note_begun(self, backoff: Backoff) -> None:
        """Add the jobs begun since the last note to the broker's count of the minute; a
        note that fails is made with the next heartbeat (the jobs are not lost from it)."""
        if self._begun is None:
            return
        try:
            total = self._begun()
        except Exception:  # a status record of a slot being replaced, say: next time
            log.exception("manager %s: reading its workers' job counters failed", self.manager)
            return
        count = total - self._begun_noted
        if count <= 0:
            return
        ok, _ = self._call(
            "counting the jobs run",
            lambda broker: broker.note_jobs_run(manager=self.manager, count=count),
            backoff,
        )
        if ok:
            self._begun_noted = total

    def _report(self, name: str, previous: str | None) -> None:
        what = "manager" if name == self.manager else "worker"
        if previous is None:
            log.warning(
                "%s %s had no heartbeat (it was paused or cut off for longer than the %gs TTL, or "
                "the broker lost it): a reaper may have handed its jobs to others; it is registered again",
                what,
                name,
                self.settings.ttl,
            )
        else:
            log.error(
                "%s %s: another process was using this name (a previous start that died, or a "
                "duplicate name on another host); names must be unique",
                what,
                name,
            )

    def _reap_loop(self) -> None:
        settings = self.settings
        backoff = Backoff(first=min(0.1, settings.reap_every), cap=settings.reap_every)
        try:
            while not self._stop.wait(settings.reap_every):
                if not self.may_reap:
                    continue
                _, reaped = self._call(
                    "reaping",
                    lambda broker: broker.reap(
                        owner=self.token,
                        lease=settings.reap_every,
                        ttl=settings.ttl,
                        max_recoveries=settings.max_recoveries,
                        limits=settings.failed_limits,
                    ),
                    backoff,
                )
                for done in reaped or ():
                    try:
                        self._on_reaped(done)
                    except Exception:
                        log.exception("manager %s: reporting a reaped worker failed", self.manager)
        finally:
            self._close_broker()
