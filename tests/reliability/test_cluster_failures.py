"""Failures on a Redis Cluster in the middle of a drain: a worker killed with SIGKILL, a
node's primary killed with SIGKILL (its replica takes over), a shard's slot migrated to
another primary. Count what ran, what ran twice, and what was lost.

Each test starts a cluster of its own (``qwtest_cluster``: three primaries with a replica
each, failure detection tuned to a second) and a manager whose three workers drain jobs
spread over three shards, one per primary; the jobs' target counts each run of each job
in another Redis (``qwtest_targets:count_runs``) that the failures do not touch.

What the documentation promises (docs/how-to/cluster.md):

- no job is lost when a worker dies, and only the jobs it held run again;
- replication is asynchronous: a job the replica had received is never lost (the drained
  jobs are all on the replicas before the drain starts: the test waits for it with
  ``WAIT``); a job whose take or finish the replica had not received may run again;
- a slot migrated in one ``MIGRATE`` (the procedure the documentation gives) loses
  nothing and runs nothing twice: while it is under way every script on that shard is
  refused (``ASK``/``TRYAGAIN``), the workers wait, and ``MOVED`` points them to the new
  owner.

Each run prints its figures (``pytest -s`` shows them).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from qwtest_cluster import LocalCluster
from qwtest_redis import PrivateRedis
from reliability_support import queue, start_manager, stop_manager, wait_for, worker_pids

from qw_core.models import Job
from qw_core.plugins import PluginConfig
from qw_core.worker import DEFAULT_PREFETCH
from qw_redis.cluster import shard_tag

pytestmark = [pytest.mark.redis, pytest.mark.slow]

JOBS = 1500
WORKERS = 3
SHARDS = 3
#: What one worker may hold and have run without reporting it: a batch, and the one before.
IN_HAND = 2 * (DEFAULT_PREFETCH + 1)


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """The Redis the jobs count their runs in (not part of the cluster)."""
    with PrivateRedis() as server:
        monkeypatch.setenv("QWTEST_REDIS_URL", server.url())
        client = redis.Redis.from_url(server.url(), decode_responses=True)
        yield client
        client.close()


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local


def _total(counter: redis.Redis) -> int:
    return int(counter.get("qwtest:total") or 0)


def _primaries(cluster: LocalCluster) -> list[redis.Redis]:
    found = []
    for node in cluster.alive():
        client = cluster.client(node)
        try:
            if client.execute_command("ROLE")[0] == "master":
                found.append(client)
                continue
        except redis.RedisError:
            pass
        client.close()
    return found


def _left(cluster: LocalCluster) -> int:
    """Ids left on any queue or worker's list, or delayed, on any primary."""
    left = 0
    for client in _primaries(cluster):
        with client:
            for key in client.scan_iter(match="{qw*"):
                kind = client.type(key)
                if kind == "list" and key.endswith(":jobs"):
                    left += client.llen(key)
                elif kind == "zset" and ":delayed:" in key:
                    left += client.zcard(key)
    return left


def _replicated(cluster: LocalCluster) -> None:
    """Wait until every primary's replica has everything it wrote."""
    for client in _primaries(cluster):
        with client:
            assert client.wait(1, 10_000) == 1


def _drain(cluster: LocalCluster, counter: redis.Redis, name: str) -> tuple[str, list[str], object]:
    url = cluster.url + f"/?shards={SHARDS}"
    ids = queue(url, [Job.new({"i": i}) for i in range(JOBS)])
    _replicated(cluster)
    manager = start_manager(
        url,
        name,
        target="qwtest_targets:count_runs",
        num_workers=WORKERS,
        plugins=PluginConfig(entry_points=False),
    )
    wait_for(lambda: _total(counter) >= JOBS // 3, timeout=60, what="a third of the jobs to run")
    return url, ids, manager


def _tally(counter: redis.Redis, ids: list[str]) -> tuple[list[str], list[str], float]:
    """The jobs of ``ids`` that never ran, those that ran more than once, and the longest
    time no job ran."""
    runs = {job_id: int(count) for job_id, count in counter.hgetall("qwtest:runs").items()}
    times = sorted(float(at) for at in counter.lrange("qwtest:at", 0, -1))
    pause = max(later - earlier for earlier, later in itertools.pairwise(times))
    lost = [job_id for job_id in ids if job_id not in runs]
    twice = [job_id for job_id, count in runs.items() if count > 1]
    return lost, twice, pause


def test_a_worker_killed_mid_drain_loses_nothing_and_only_its_jobs_run_again(
    cluster: LocalCluster, counter: redis.Redis
) -> None:
    _, ids, manager = _drain(cluster, counter, "kw")
    try:
        victim = worker_pids(manager)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in worker_pids(manager), timeout=30, what="the worker to be replaced")
        wait_for(lambda: _total(counter) >= JOBS and _left(cluster) == 0, timeout=120, what="the drain")
    finally:
        stop_manager(manager)
    lost, twice, _ = _tally(counter, ids)
    print(f"\ncluster, worker killed mid-drain: {JOBS} jobs, lost {len(lost)}, ran twice {len(twice)}")
    assert lost == []
    assert len(twice) <= IN_HAND, "more jobs ran again than the killed worker held"
    assert _runs_at_most(counter, 2)


def test_a_primary_killed_mid_drain_fails_over_to_its_replica_and_the_workers_finish_the_drain(
    cluster: LocalCluster, counter: redis.Redis
) -> None:
    _, ids, manager = _drain(cluster, counter, "kp")
    try:
        pids = worker_pids(manager)
        victim = cluster.primary_of(shard_tag(0, SHARDS))
        killed_at, ran_at_kill = time.monotonic(), _total(counter)
        victim.kill()
        wait_for(
            lambda: cluster.primary_of(shard_tag(0, SHARDS)) is not victim,
            timeout=30,
            what="the replica to take over",
        )
        cluster.wait_ok()
        failed_over_at, ran_at_ok = time.monotonic(), _total(counter)
        wait_for(lambda: _total(counter) >= JOBS and _left(cluster) == 0, timeout=120, what="the drain")
        assert worker_pids(manager) == pids, "a worker died of the failover instead of waiting it out"
    finally:
        stop_manager(manager)
    lost, twice, pause = _tally(counter, ids)
    print(
        f"\ncluster, primary killed mid-drain: {JOBS} jobs on {SHARDS} shards, lost {len(lost)}, "
        f"ran twice {len(twice)}; the replica took over after {failed_over_at - killed_at:.2f} s "
        f"({ran_at_ok - ran_at_kill} jobs ran meanwhile, on the other shards); no job ran for {pause:.2f} s"
    )
    assert lost == [], "a job the replica had was lost"
    assert _runs_at_most(counter, 2)
    # A second run needs a take or a finish the replica never received: a few per worker.
    assert len(twice) <= WORKERS * IN_HAND


def _runs_at_most(counter: redis.Redis, most: int) -> bool:
    return all(int(count) <= most for count in counter.hvals("qwtest:runs"))


def test_a_slot_migrated_mid_drain_loses_nothing_and_runs_nothing_twice(
    cluster: LocalCluster, counter: redis.Redis
) -> None:
    _, ids, manager = _drain(cluster, counter, "mg")
    try:
        pids = worker_pids(manager)
        old, new = cluster.migrate_slot(shard_tag(0, SHARDS))
        assert cluster.primary_of(shard_tag(0, SHARDS)).port == new != old
        wait_for(lambda: _total(counter) >= JOBS and _left(cluster) == 0, timeout=120, what="the drain")
        assert worker_pids(manager) == pids
    finally:
        stop_manager(manager)
    lost, twice, pause = _tally(counter, ids)
    print(
        f"\ncluster, slot migrated mid-drain: {JOBS} jobs, lost {len(lost)}, ran twice {len(twice)}; "
        f"no job ran for {pause:.2f} s"
    )
    assert lost == []
    assert twice == []
