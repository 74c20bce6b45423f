"""Acting on failed and stray jobs: the :class:`~qw_core.broker.Administrator` role of the PostgreSQL broker.

A run over the whole failed registry, or a move of a whole queue, goes in statements of a
bounded size (:data:`FAILED_BATCH`, :data:`MOVE_BATCH` rows), up to the newest failure
there was when it began. One part of :class:`~qw_postgres.broker.PostgresBroker`, over
the connection of :mod:`qw_postgres.base`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qw_core.errors import WorkerRunning
from qw_postgres.base import PostgresBase, translated
from qw_postgres.schema import BLOCK

#: Most jobs one statement of a move or a bulk requeue moves.
MOVE_BATCH = 5000
#: Most failed jobs one statement of requeue_all_failed / purge_all_failed handles.
FAILED_BATCH = 500


class AdministratorPart(PostgresBase):
    """The administering methods of :class:`~qw_postgres.broker.PostgresBroker`."""

    @translated
    def requeue_failed(self, job_id: str) -> bool:
        return bool(self._rows("REQUEUE_FAILED", {"ids": [job_id]}))

    @translated
    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        s = self._schema
        if job_ids is None:
            return self.purge_all_failed()
        cursor = self._connection().execute(
            f"DELETE FROM {s}.failed WHERE id = ANY (%s)", [list(dict.fromkeys(job_ids))]
        )
        return cursor.rowcount

    @translated
    def purge_all_failed(self, *, progress: Callable[[int], None] | None = None) -> int:
        """See :meth:`Broker.purge_all_failed`: :data:`FAILED_BATCH` a statement."""
        s = self._schema
        conn = self._connection()
        [(last,)] = conn.execute(f"SELECT max(position) FROM {s}.failed").fetchall()
        purged = 0
        while last is not None:
            count = conn.execute(
                f"DELETE FROM {s}.failed WHERE id IN (SELECT id FROM {s}.failed WHERE position <= %s "
                "ORDER BY position LIMIT %s)",
                [last, FAILED_BATCH],
            ).rowcount
            if count == 0:
                break
            purged += count
            if progress is not None:
                progress(count)
        return purged

    @translated
    def requeue_all_failed(self, *, progress: Callable[[Sequence[str]], None] | None = None) -> int:
        """See :meth:`Broker.requeue_all_failed`: pages of :data:`FAILED_BATCH` ids up to the
        newest failure when called, each requeued by one statement."""
        s = self._schema
        conn = self._connection()
        [(last,)] = conn.execute(f"SELECT max(position) FROM {s}.failed").fetchall()
        after: int | None = None
        requeued = 0
        while last is not None:
            page = conn.execute(
                f"SELECT id, position FROM {s}.failed WHERE position <= %s AND (%s::bigint IS NULL "
                "OR position > %s) ORDER BY position LIMIT %s",
                [last, after, after, FAILED_BATCH],
            ).fetchall()
            if not page:
                break
            after = page[-1][1]
            done = {row[0] for row in self._rows("REQUEUE_FAILED", {"ids": [row[0] for row in page]})}
            ids = [row[0] for row in page if row[0] in done]
            requeued += len(ids)
            if progress is not None:
                progress(ids)
        return requeued

    @translated
    def move_queued(self, name: str, *, to: str | None = None) -> int:
        """See :meth:`Broker.move_queued`: the queue, then the list, in batches of
        :data:`MOVE_BATCH` rows, each to the back of ``to``'s queue in order."""
        self._check_cached(name)
        if to is not None:
            self._check_cached(to)
        s = self._schema
        conn = self._connection()
        held = conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {s}.jobs WHERE state = 'held' AND holder = %s)", [name]
        )
        [(has_held,)] = held.fetchall()
        if has_held and self._worker_running(name):
            raise WorkerRunning(f"worker {name} is running: the jobs on its list are its own")
        target = "default" if to is None else f"m:{to}"
        moved = 0
        for where in ("state = 'queued' AND origin = %(from)s", "state = 'held' AND holder = %(name)s"):
            while True:
                count = conn.execute(
                    f"WITH c AS (SELECT id, position FROM {s}.jobs WHERE {where} ORDER BY position "
                    f"LIMIT {MOVE_BATCH} FOR UPDATE SKIP LOCKED), "
                    "r AS (SELECT c.id, row_number() OVER (ORDER BY c.position) AS rn FROM c), "
                    f"b AS (SELECT nextval('{s}.positions') * {BLOCK} AS base), "
                    f"u AS (UPDATE {s}.jobs j SET state = 'queued', holder = NULL, origin = %(to)s, "
                    "position = b.base + r.rn FROM r CROSS JOIN b WHERE j.id = r.id RETURNING j.id) "
                    f"SELECT count(*), (SELECT count(*) FROM (SELECT pg_notify({s}.channel(%(to)s), '') "
                    "WHERE EXISTS (SELECT 1 FROM u)) n) FROM u",
                    {"from": f"m:{name}", "name": name, "to": target},
                ).fetchall()[0][0]
                moved += int(count)
                if count < MOVE_BATCH:
                    break
        return moved

    def _worker_running(self, name: str) -> bool:
        s = self._schema
        row = (
            self._connection()
            .execute(
                f"SELECT EXISTS (SELECT 1 FROM {s}.workers WHERE name = %(n)s), "
                f"EXISTS (SELECT 1 FROM {s}.managers WHERE name = %(n)s), "
                f"EXISTS (SELECT 1 FROM {s}.heartbeats WHERE name = %(n)s AND expires > {s}.now_s())",
                {"n": name},
            )
            .fetchone()
        )
        worker, manager, beating = row or (False, False, False)
        return bool(worker or (beating and not manager))
