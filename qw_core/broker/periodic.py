"""The periodic role (optional, ``capabilities.schedules``): ticks of periodic jobs.

A manager's scheduler (:mod:`qw_core.scheduler`) calls these. A backend that does not keep
schedules keeps the defaults, which refuse; a manager with schedules then refuses to
start on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from qw_core.broker.role import Role
from qw_core.errors import QwError
from qw_core.models import Job, TickResult, TickState


class Periodic(Role):
    """The backend's clock, each schedule's last tick, and what managers declare.

    The contract, for every method below: :meth:`enqueue_tick` is one atomic step that
    enqueues each tick of a schedule once across every manager and every retried call,
    holding no lock or lease between calls; schedules tick by the backend's clock
    (:meth:`now`), never a host's. Nothing here blocks.
    """

    def _no_schedules(self, what: str) -> QwError:
        return QwError(
            f"{what}: the {type(self).__name__} backend does not keep periodic jobs "
            "(capabilities.schedules is false); run schedules on a backend that does, such as redis"
        )

    def now(self) -> float:
        """The backend's clock: seconds since the epoch (Redis: ``TIME``).

        Schedules tick by this clock, never by a host's: managers on hosts whose clocks
        disagree agree on it, so each tick is due at one moment for all of them.
        """
        raise self._no_schedules("now")

    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        """Enqueue ``job`` for tick ``tick`` of schedule ``schedule_id``, once across every
        caller: one atomic step that checks that ``tick`` is newer than the schedule's last
        enqueued tick, records it (with ``manager`` and the backend's time) and queues
        ``job`` (on the queue it names), all or nothing.

        A tick not newer than the last (the same tick again: a call retried after a
        timeout, or another manager's; or an older one) writes nothing and reports
        ``enqueued=False`` with the last tick, so concurrent managers and retries enqueue
        each tick once, and ticks are enqueued in order (monotonic). No lock or lease is
        held between calls: a caller that dies at any point leaves either nothing or the
        whole step done.

        :param schedule_id: the schedule's id (:func:`qw_core.schedules.check_schedule_id`).
        :param tick: the tick, seconds since the epoch.
        :param job: the tick's job, with an id derived from the schedule and the tick
            (:func:`qw_core.schedules.tick_job_id`); a job with that id stored already is
            left as it is (as :meth:`Producer.queue_jobs` does).
        :param manager: who enqueues it (``qw schedules`` shows it).
        :raises InvalidJob: the job cannot be stored (nothing is written).
        """
        raise self._no_schedules("enqueue_tick")

    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        """Say that ``manager`` runs these schedules, for ``ttl`` seconds unless declared
        again; return each one's last enqueued tick (``None``: none yet).

        Replaces what ``manager`` declared before (an empty mapping withdraws everything).
        Only schedules that a manager declares now are listed (:meth:`Inspector.schedules`): a
        schedule removed from the code disappears once no running manager declares it,
        and its last tick is forgotten a while later (Redis: a week after the last
        declaration), so nothing is left behind.

        :param declarations: schedule id → its declaration (JSON text made by
            :meth:`qw_core.schedules.Schedule.declaration`), stored as given.
        """
        raise self._no_schedules("declare_schedules")

    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        """What each manager declares now (manager → schedule id → declaration), for those
        whose declarations have not lapsed."""
        raise self._no_schedules("schedule_declarations")

    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        """The last enqueued tick of each of ``schedule_ids`` that has one."""
        raise self._no_schedules("tick_states")
