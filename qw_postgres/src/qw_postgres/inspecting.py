"""Jobs and the running system: the :class:`~qw_core.broker.Inspector` role of the
PostgreSQL broker, but for the listings (:mod:`qw_postgres.listing`).

Where one job is (:meth:`InspectorPart.job_status`), who runs (managers, workers,
heartbeats), the jobs begun a minute, and the queues and lists nobody serves
(:meth:`InspectorPart.stray_queues`). One part of
:class:`~qw_postgres.broker.PostgresBroker`, over the connection of :mod:`qw_postgres.base`.
"""

from __future__ import annotations

from qw_core.broker import check_minutes
from qw_core.models import Job, JobsRun, JobState, State, queue_label
from qw_postgres import codec
from qw_postgres.base import PostgresBase, translated


class InspectorPart(PostgresBase):
    """The inspecting methods of :class:`~qw_postgres.broker.PostgresBroker`."""

    @translated
    def job_status(self, job_id: str) -> JobState:
        rows = self._rows("STATUS", {"id": job_id})
        for row in sorted(rows, key=lambda row: row[0] != "failed"):
            kind = row[0]
            job = codec.decode_kept(row[1:9]) if kind == "failed" else codec.decode(*row[1:9])
            label = queue_label(job)
            if kind == "failed":
                failed = codec.decode_failed([*row[1:9], row[9], row[10]])
                failure = failed.failure
                return JobState(
                    job_id=job_id,
                    state=State.FAILED,
                    job=job,
                    queue=label,
                    worker=failure.worker,
                    failure=failure,
                )
            holder, origin, due, since = row[11:15]
            if kind == "held" and origin != "w":
                return JobState(
                    job_id=job_id, state=State.HELD, job=job, queue=label, worker=holder, since=since
                )
            if kind == "delayed":
                return JobState(job_id=job_id, state=State.DELAYED, job=job, queue=label, due_at=due)
            return JobState(job_id=job_id, state=State.QUEUED, job=job, queue=label)
        return self._ended_state(job_id)

    def _ended_state(self, job_id: str) -> JobState:
        """The state of a job that is no longer stored: succeeded while remembered, else unknown."""
        found = self.get_result(job_id)
        if found is not None:
            return JobState(
                job_id=job_id,
                state=State.SUCCEEDED,
                worker=found.worker,
                result=found,
                finished_at=found.finished_at,
            )
        noted = self._rows("FINISHED_AT", [job_id])
        if noted:
            return JobState(job_id=job_id, state=State.SUCCEEDED, finished_at=noted[0][0])
        return JobState(job_id=job_id, state=State.UNKNOWN)

    @translated
    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        s = self._schema
        row = (
            self._connection()
            .execute(f"SELECT token, expires - {s}.now_s() FROM {s}.heartbeats WHERE name = %s", [name])
            .fetchone()
        )
        if row is None or row[1] <= 0:
            return None
        return str(row[0]), float(row[1])

    @translated
    def managers(self) -> list[str]:
        return self._column(f"SELECT name FROM {self._schema}.managers ORDER BY name")

    @translated
    def workers(self, manager: str) -> list[str]:
        return self._column(
            f"SELECT name FROM {self._schema}.workers WHERE manager = %s ORDER BY name", [manager]
        )

    @translated
    def named_queues(self) -> list[str]:
        return self._column(f"SELECT name FROM {self._schema}.queues ORDER BY name")

    @translated
    def get_job(self, job_id: str) -> Job | None:
        s = self._schema
        for table in ("jobs", "failed"):
            row = (
                self._connection()
                .execute(f"SELECT {codec.JOB_COLUMNS} FROM {s}.{table} WHERE id = %s", [job_id])
                .fetchone()
            )
            if row is not None:
                return codec.decode_kept(row) if table == "failed" else codec.decode(*row)
        return None

    @translated
    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        """See :meth:`Broker.jobs_run`: the last ``minutes`` minutes of ``jobs_run``, by the
        database's clock, one entry per minute."""
        check_minutes(minutes)
        rows = self._rows("JOBS_RUN", {"span": 60 * minutes})
        now = int(rows[0][0])
        counts: dict[int, dict[str, int]] = {now - 60 * i: {} for i in range(minutes)}
        for _, minute, manager, count in rows:
            if minute is not None and int(minute) in counts:
                counts[int(minute)][manager] = int(count)
        return [JobsRun(minute=minute, counts=counts[minute]) for minute in sorted(counts)]

    @translated
    def stray_queues(self) -> dict[str, int]:
        s = self._schema
        self._promote()
        rows = (
            self._connection()
            .execute(
                f"SELECT substr(origin, 3), count(*) FROM {s}.jobs "
                "WHERE state = 'queued' AND left(origin, 2) = 'm:' GROUP BY origin "
                f"UNION ALL SELECT holder, count(*) FROM {s}.jobs WHERE state = 'held' GROUP BY holder"
            )
            .fetchall()
        )
        found: dict[str, int] = {}
        for name, count in rows:
            found[name] = found.get(name, 0) + int(count)
        return {name: count for name, count in sorted(found.items()) if not self._running(name)}

    def _running(self, name: str) -> bool:
        s = self._schema
        row = (
            self._connection()
            .execute(
                f"SELECT EXISTS (SELECT 1 FROM {s}.managers WHERE name = %(n)s), "
                f"EXISTS (SELECT 1 FROM {s}.workers WHERE name = %(n)s), "
                f"EXISTS (SELECT 1 FROM {s}.heartbeats WHERE name = %(n)s AND expires > {s}.now_s())",
                {"n": name},
            )
            .fetchone()
        )
        manager, worker, beating = row or (False, False, False)
        return bool(manager or worker or (beating and not manager))
