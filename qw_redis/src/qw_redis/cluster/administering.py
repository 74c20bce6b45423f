"""Acting on failed and stray jobs: the :class:`~qw_core.broker.Administrator` role of the cluster broker.

Each shard keeps its own failed registry and queues: a run over them all is one run per
shard; a failed job is requeued on the shard it is on. One part of
:class:`~qw_redis.cluster.broker.ClusterBroker`, over the shards of :mod:`qw_redis.cluster.base`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qw_redis.cluster.base import ClusterBase


class AdministratorPart(ClusterBase):
    """The administering methods of :class:`~qw_redis.cluster.broker.ClusterBroker`."""

    def requeue_failed(self, job_id: str) -> bool:
        return any(self._on(i, lambda s: s.requeue_failed(job_id)) for i in self._likely(job_id))

    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        return sum(self._all(lambda s: s.purge_failed(job_ids)))

    def requeue_all_failed(self, *, progress: Callable[[Sequence[str]], None] | None = None) -> int:
        return sum(self._all(lambda s: s.requeue_all_failed(progress=progress)))

    def purge_all_failed(self, *, progress: Callable[[int], None] | None = None) -> int:
        return sum(self._all(lambda s: s.purge_all_failed(progress=progress)))

    def move_queued(self, name: str, *, to: str | None = None) -> int:
        return sum(self._all(lambda s: s.move_queued(name, to=to)))
