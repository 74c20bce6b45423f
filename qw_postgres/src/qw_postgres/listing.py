"""Listings and counts: the queues, held lists, delayed jobs and failed jobs, for the
:class:`~qw_core.broker.Inspector` role of the PostgreSQL broker.

Each listing or count is one statement; one of queued jobs moves the delayed jobs that
are due first (``<schema>.promote()``), so a job is never missing from both listings.
One part of :class:`~qw_postgres.broker.PostgresBroker`, over the connection of
:mod:`qw_postgres.base`.
"""

from __future__ import annotations

from qw_core.broker import check_listed, check_page
from qw_core.models import FailedJob
from qw_postgres import codec
from qw_postgres.base import PostgresBase, translated


class ListingPart(PostgresBase):
    """The listing methods of :class:`~qw_postgres.broker.PostgresBroker`."""

    @translated
    def queued_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.queued_job_ids`; delayed jobs that are due are moved first."""
        check_page(offset, limit)
        origin = self._listed(manager, queue)
        self._promote()
        return self._column(
            f"SELECT id FROM {self._schema}.jobs WHERE state = 'queued' AND origin = %s "
            "ORDER BY position OFFSET %s LIMIT %s",
            [origin, offset, limit],
        )

    @translated
    def queued_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        origin = self._listed(manager, queue)
        self._promote()
        [count] = self._column(
            f"SELECT count(*) FROM {self._schema}.jobs WHERE state = 'queued' AND origin = %s", [origin]
        )
        return int(count)

    def _listed(self, manager: str | None, queue: str | None) -> str:
        manager, queue = check_listed(manager, queue)
        if manager is not None:
            self._check_cached(manager)
            return f"m:{manager}"
        if queue is not None:
            self._check_cached(queue)
            return f"q:{queue}"
        return "default"

    @translated
    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        check_page(offset, limit)
        return self._column(
            f"SELECT id FROM {self._schema}.jobs WHERE state = 'held' AND holder = %s "
            "ORDER BY position OFFSET %s LIMIT %s",
            [worker, offset, limit],
        )

    @translated
    def held_count(self, worker: str) -> int:
        [count] = self._column(
            f"SELECT count(*) FROM {self._schema}.jobs WHERE state = 'held' AND holder = %s", [worker]
        )
        return int(count)

    @translated
    def delayed_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        check_page(offset, limit)
        origin = self._listed(manager, queue)
        return self._column(
            f"SELECT id FROM {self._schema}.jobs WHERE state = 'delayed' AND origin = %s "
            "ORDER BY due, position OFFSET %s LIMIT %s",
            [origin, offset, limit],
        )

    @translated
    def delayed_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        origin = self._listed(manager, queue)
        [count] = self._column(
            f"SELECT count(*) FROM {self._schema}.jobs WHERE state = 'delayed' AND origin = %s", [origin]
        )
        return int(count)

    @translated
    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        rows = self._connection().execute(
            f"SELECT {codec.JOB_COLUMNS}, failure::text, failed_at FROM {self._schema}.failed "
            "ORDER BY position DESC LIMIT %s",
            [max(0, limit)],
        )
        return [codec.decode_failed(row) for row in rows]

    @translated
    def failed_count(self) -> int:
        [count] = self._column(f"SELECT count(*) FROM {self._schema}.failed")
        return int(count)

    @translated
    def get_failed(self, job_id: str) -> FailedJob | None:
        row = (
            self._connection()
            .execute(
                f"SELECT {codec.JOB_COLUMNS}, failure::text, failed_at "
                f"FROM {self._schema}.failed WHERE id = %s",
                [job_id],
            )
            .fetchone()
        )
        return None if row is None else codec.decode_failed(row)

    @translated
    def job_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        s = self._schema
        pattern = _like_prefix(prefix)
        return self._column(
            f"SELECT DISTINCT id FROM (SELECT id FROM {s}.jobs WHERE id LIKE %(p)s "
            f"UNION ALL SELECT id FROM {s}.failed WHERE id LIKE %(p)s "
            f"UNION ALL SELECT id FROM {s}.results WHERE id LIKE %(p)s AND expires > {s}.now_s() "
            f"UNION ALL SELECT id FROM {s}.finished WHERE id LIKE %(p)s AND expires > {s}.now_s()) found "
            "LIMIT %(n)s",
            {"p": pattern, "n": max(0, limit)},
        )

    @translated
    def failed_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        return self._column(
            f"SELECT id FROM {self._schema}.failed WHERE id LIKE %s LIMIT %s",
            [_like_prefix(prefix), max(0, limit)],
        )


def _like_prefix(prefix: str) -> str:
    """A ``LIKE`` pattern matching text that starts with ``prefix``, taken literally."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
