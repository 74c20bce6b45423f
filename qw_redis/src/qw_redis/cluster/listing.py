"""Listings and counts across the shards, for the :class:`~qw_core.broker.Inspector` role
of the cluster broker.

A count adds up the shards; a page of a listing is cut from the shards' listings one
after the other (order holds within a shard, not across shards); the failed registry is
merged newest first, as on one node. One part of
:class:`~qw_redis.cluster.broker.ClusterBroker`, over the shards of :mod:`qw_redis.cluster.base`.
"""

from __future__ import annotations

from collections.abc import Callable

from qw_core.broker import check_page
from qw_core.models import FailedJob
from qw_redis.broker import RedisBroker
from qw_redis.cluster.base import ClusterBase


class ListingPart(ClusterBase):
    """The listing and counting methods of :class:`~qw_redis.cluster.broker.ClusterBroker`."""

    def _paged(
        self, read: Callable[[RedisBroker, int | None], list[str]], offset: int, limit: int | None
    ) -> list[str]:
        """A page of a listing across the shards: each shard's first ``offset + limit``
        ids, shard after shard, then the page of those (order holds within a shard)."""
        check_page(offset, limit)
        want = None if limit is None else offset + limit
        found = [i for ids in self._all(lambda s: read(s, want)) for i in ids]
        return found[offset:want]

    def queued_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        return self._paged(lambda s, want: s.queued_job_ids(manager, queue=queue, limit=want), offset, limit)

    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        return self._paged(lambda s, want: s.held_job_ids(worker, limit=want), offset, limit)

    def queued_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        return sum(self._all(lambda s: s.queued_count(manager, queue=queue)))

    def held_count(self, worker: str) -> int:
        return sum(self._all(lambda s: s.held_count(worker)))

    def delayed_count(self, manager: str | None = None, *, queue: str | None = None) -> int:
        return sum(self._all(lambda s: s.delayed_count(manager, queue=queue)))

    def delayed_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        return self._paged(lambda s, want: s.delayed_job_ids(manager, queue=queue, limit=want), offset, limit)

    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        return self.failed_jobs_page(offset=0, limit=limit)

    def failed_jobs_page(self, *, offset: int = 0, limit: int = 100) -> list[FailedJob]:
        check_page(offset, limit)
        found = [
            f
            for page in self._all(lambda s: s.failed_jobs_page(offset=0, limit=offset + limit))
            for f in page
        ]
        found.sort(key=lambda f: f.failure.failed_at, reverse=True)  # newest first, as on one node
        return found[offset : offset + limit]

    def failed_count(self) -> int:
        return sum(self._all(lambda s: s.failed_count()))

    def get_failed(self, job_id: str) -> FailedJob | None:
        return self._first(self._likely(job_id), lambda s: s.get_failed(job_id))

    def job_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        found = {
            i: None for ids in self._all(lambda s: s.job_ids_with_prefix(prefix, limit=limit)) for i in ids
        }
        return sorted(found)[:limit]

    def failed_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        found = {
            i: None for ids in self._all(lambda s: s.failed_ids_with_prefix(prefix, limit=limit)) for i in ids
        }
        return sorted(found)[:limit]
