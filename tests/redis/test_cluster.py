"""What a Redis Cluster with several shards does (qw_redis.cluster), beyond the broker
contract (test_cluster_contract.py): where keys and jobs go, where a worker takes from
and waits, and how jobs taken on one shard are settled from anywhere.

On the session's six-node cluster (``empty_cluster``: three primaries, flushed per test).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from qwtest_cluster import LocalCluster
from redis.crc import key_slot
from redis_support import CommandCounter

from qw_core.errors import BrokerUnavailable, ConfigurationError
from qw_core.models import Failure, Job
from qw_core.unique import UNIQUE_META
from qw_redis.broker import RedisBroker
from qw_redis.cluster import SLOTS, ClusterBroker, home_shard, id_shard, parse, shard_tag
from qw_redis.cluster import consuming as cluster_consuming

SHARDS = 3
M = "m1"


@pytest.fixture
def broker(empty_cluster: LocalCluster) -> Iterator[ClusterBroker]:
    opened = RedisBroker.from_url(empty_cluster.url + f"/?shards={SHARDS}")
    assert isinstance(opened, ClusterBroker)
    yield opened
    opened.close()


def worker_on(shard: int) -> str:
    """A worker name whose home is ``shard``."""
    name = f"{M}.{99 + shard}"
    assert home_shard(name, SHARDS) == shard
    return name


def ids_on(broker: ClusterBroker, shard: int, count: int) -> list[Job]:
    """``count`` new jobs that go to ``shard``."""
    jobs: list[Job] = []
    while len(jobs) < count:
        job = Job.new({"n": len(jobs)})
        if id_shard(job.id, SHARDS) == shard:
            jobs.append(job)
    return jobs


# -- layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 6, 64])
def test_each_shards_tag_hashes_to_its_own_equal_range_of_slots(shards: int) -> None:
    for index in range(shards):
        tag = shard_tag(index, shards)
        assert tag.startswith("{qw")
        assert tag.endswith("}")
        assert index * SLOTS // shards <= key_slot(tag.encode()) < (index + 1) * SLOTS // shards


def test_three_shards_land_on_the_three_primaries(broker: ClusterBroker) -> None:
    nodes = {shard.describe() for shard in broker.shards}
    assert len(nodes) == SHARDS


def test_every_key_carries_its_shards_tag_and_jobs_spread_over_every_shard(
    broker: ClusterBroker, empty_cluster: LocalCluster
) -> None:
    broker.register_manager(M)
    broker.beat(manager=M, token="t", workers={worker_on(0): "w"}, ttl=30)
    broker.queue_jobs([Job.new({"n": n}) for n in range(60)])
    broker.queue_jobs([Job.new({"n": n}, manager=M) for n in range(3)], delay=60)
    broker.take(manager=M, worker=worker_on(0), limit=5)
    tags = [shard_tag(i, SHARDS) for i in range(SHARDS)]
    per_tag = dict.fromkeys(tags, 0)
    for node in empty_cluster.alive():
        with empty_cluster.client(node) as client:
            if client.execute_command("ROLE")[0] != "master":
                continue
            for key in client.scan_iter("*"):
                tag = next((t for t in tags if key.startswith(t)), None)
                assert tag is not None, f"{key} has no shard's tag"
                per_tag[tag] += key.startswith(tag + "job:")
    assert all(count > 0 for count in per_tag.values()), per_tag
    assert [shard.queued_count() for shard in broker.shards] == [
        sum(id_shard(i, SHARDS) == s for i in broker.queued_job_ids()) for s in range(SHARDS)
    ]
    assert broker.queued_count() + broker.held_count(worker_on(0)) == 60
    assert broker.delayed_count(M) == 3


def test_a_job_with_a_unique_key_is_refused_on_every_shard_while_another_holds_the_key(
    broker: ClusterBroker,
) -> None:
    unique = {UNIQUE_META: {"key": "report-7"}}
    first, *others = [Job.new({"n": n}, meta=unique) for n in range(6)]
    assert broker.queue_jobs([first]) == [first.id]
    assert {id_shard(job.id, SHARDS) for job in others} != {id_shard(first.id, SHARDS)}
    for job in others:
        assert broker.queue_jobs([job]) == [first.id], "the holder answers, wherever the id would go"
    assert broker.queued_job_ids() == [first.id]


# -- taking ----------------------------------------------------------------------------------


def test_a_take_with_work_on_the_home_shard_is_one_round_trip(broker: ClusterBroker) -> None:
    worker = worker_on(1)
    home = broker.shards[1]
    broker.queue_jobs(ids_on(broker, 1, 3) + ids_on(broker, 0, 3) + ids_on(broker, 2, 3))
    [first] = broker.take(manager=M, worker=worker)
    counters = [CommandCounter(shard._client) for shard in broker.shards]
    [second] = broker.take(manager=M, worker=worker, finished=[first.id])
    assert [len(c) for c in counters] == [0, 1, 0], "finish and take in one call on the home shard"
    assert counters[1].names == ["EVALSHA"]
    assert home.held_job_ids(worker) == [second.id]


def test_a_worker_takes_from_its_home_shard_first_then_from_the_others(broker: ClusterBroker) -> None:
    worker = worker_on(2)
    elsewhere, home = ids_on(broker, 0, 2), ids_on(broker, 2, 2)
    broker.queue_jobs(elsewhere + home)
    first = broker.take(manager=M, worker=worker, limit=2)
    assert {job.id for job in first} == {j.id for j in home}
    taken = broker.take(manager=M, worker=worker, limit=5, held=[job.id for job in first])
    assert {job.id for job in taken} == {j.id for j in elsewhere}, "then the batch is filled from the others"
    assert broker.take(manager=M, worker=worker, held=[job.id for job in first + taken]) == []


def test_a_blocked_worker_takes_a_job_queued_on_another_shard(broker: ClusterBroker) -> None:
    worker = worker_on(0)
    [job] = ids_on(broker, 2, 1)
    with ThreadPoolExecutor(1) as pool:
        taking = pool.submit(broker.factory()().take, manager=M, worker=worker, timeout=30)
        broker.queue_jobs([job])
        assert taking.result(timeout=30) == [job]


def test_a_job_sent_to_a_worker_goes_to_its_home_shard(broker: ClusterBroker) -> None:
    worker = worker_on(1)
    job = Job.new({"n": 1}, worker=worker)
    broker.queue_jobs([job])
    assert broker.shards[1].held_job_ids(worker) == [job.id]
    assert broker.take(manager=M, worker=worker) == [job]


def test_jobs_taken_on_several_shards_are_settled_by_another_broker_object(
    broker: ClusterBroker,
) -> None:
    worker = worker_on(0)
    done, failed, released = ids_on(broker, 0, 1) + ids_on(broker, 1, 1) + ids_on(broker, 2, 1)
    broker.queue_jobs([done, failed, released])
    assert len(broker.take(manager=M, worker=worker, limit=3)) == 3
    other = broker.factory()()  # a manager's broker: it did not see where each came from
    try:
        assert other.finish_jobs(worker=worker, job_ids=[done.id]) == [True]
        assert other.fail_job(worker=worker, job=failed, failure=Failure(exc_type="E", message="m"))
        assert other.release_jobs(worker=worker, job_ids=[released.id]) == 1
        assert other.held_job_ids(worker) == []
        assert other.get_failed(failed.id) is not None
        assert other.queued_job_ids() == [released.id]
        assert other.get_job(done.id) is None
    finally:
        other.close()


def test_jobs_whose_shard_was_forgotten_are_still_settled(
    broker: ClusterBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_consuming, "MAX_REMEMBERED", 1)  # where take reads it
    worker = worker_on(2)
    first = ids_on(broker, 0, 1) + ids_on(broker, 1, 1)
    later = ids_on(broker, 2, 1)
    broker.queue_jobs(first)
    assert len(broker.take(manager=M, worker=worker, limit=2)) == 2
    broker.queue_jobs(later)
    held = [job.id for job in first]
    assert broker.take(manager=M, worker=worker, held=held) == later  # forgets the first two
    # Still held, though their shards were forgotten: a take that visits those shards
    # finds where they are held and does not hand them out again as leftovers.
    more = ids_on(broker, 0, 1) + ids_on(broker, 1, 1)
    broker.queue_jobs(more)
    taken = broker.take(manager=M, worker=worker, held=[*held, later[0].id], limit=5)
    assert sorted(job.id for job in taken) == sorted(job.id for job in more)
    held += [job.id for job in more]
    assert broker.finish_jobs(worker=worker, job_ids=[*held, later[0].id]) == [True] * 5
    assert broker.held_job_ids(worker) == []


def test_a_dead_workers_jobs_are_recovered_from_every_shard(broker: ClusterBroker) -> None:
    worker = worker_on(0)
    jobs = ids_on(broker, 0, 2) + ids_on(broker, 1, 2) + ids_on(broker, 2, 2)
    broker.queue_jobs(jobs)
    broker.register_worker(manager=M, worker=worker)
    assert len(broker.take(manager=M, worker=worker, limit=6)) == 6
    assert broker.recover_worker(manager=M, worker=worker) == 6
    assert sorted(broker.queued_job_ids()) == sorted(job.id for job in jobs)
    assert broker.workers(M) == []


def test_a_reaper_recovers_a_dead_workers_jobs_from_every_shard(broker: ClusterBroker) -> None:
    worker = worker_on(1)
    jobs = ids_on(broker, 0, 1) + ids_on(broker, 1, 1) + ids_on(broker, 2, 1)
    broker.queue_jobs(jobs)
    broker.beat(manager=M, token="m", workers={worker: "w"}, ttl=0.2)
    assert len(broker.take(manager=M, worker=worker, limit=3)) == 3
    broker.beat(manager=M, token="m", workers={}, ttl=30)
    recovered = 0
    until = time.monotonic() + 20
    while recovered < 3:
        assert time.monotonic() < until, "the reaper did not recover every shard's jobs"
        recovered += sum(r.requeued for r in broker.reap(owner="r", lease=0, ttl=0.2) or [])
    assert sorted(broker.queued_job_ids()) == sorted(job.id for job in jobs)


def _beat_lagging(broker: ClusterBroker, worker: str, *, lag_ttl: float) -> None:
    """Beat for ``worker`` on every shard with a 0.2 s TTL, then once more on shard 2 alone
    with ``lag_ttl``: its heartbeat there lapses later (as after a beat written slowly)."""
    broker.beat(manager=M, token="m", workers={worker: "w"}, ttl=0.2)
    broker._shards[2].beat(manager=M, token="m", workers={worker: "w"}, ttl=lag_ttl)
    broker.beat(manager=M, token="m", workers={}, ttl=30)


def test_a_worker_reaped_on_some_shards_is_reaped_on_the_others_when_its_heartbeat_lapses_there(
    broker: ClusterBroker,
) -> None:
    worker = worker_on(0)
    jobs = ids_on(broker, 0, 1) + ids_on(broker, 2, 1)
    broker.queue_jobs(jobs)
    _beat_lagging(broker, worker, lag_ttl=0.45)
    assert len(broker.take(manager=M, worker=worker, limit=2)) == 2
    deadline = time.monotonic() + 20
    while not (reaped := broker.reap(owner="r", lease=0, ttl=0.2)):
        assert time.monotonic() < deadline, "the worker was not reaped"
        time.sleep(0.02)
    # One round: reaped on shards 0 and 1 first, then on shard 2 once it lapsed there too.
    assert [(r.worker, r.requeued) for r in reaped] == [(worker, 2)]
    assert broker.workers(M) == []
    assert sorted(broker.queued_job_ids()) == sorted(job.id for job in jobs)


def test_a_worker_that_still_beats_on_a_shard_is_left_alone_there(broker: ClusterBroker) -> None:
    worker = worker_on(0)
    [held] = ids_on(broker, 2, 1)
    broker.queue_jobs([held])
    _beat_lagging(broker, worker, lag_ttl=30)
    assert broker.take(manager=M, worker=worker) == [held]
    deadline = time.monotonic() + 20
    while not (reaped := broker.reap(owner="r", lease=0, ttl=0.2)):
        assert time.monotonic() < deadline, "the worker was not reaped"
        time.sleep(0.02)
    assert [(r.worker, r.requeued) for r in reaped] == [(worker, 0)]
    assert broker.workers(M) == [worker], "still registered on shard 2, where it beats"
    assert broker.held_job_ids(worker) == [held.id]


def test_a_shard_that_cannot_be_reaped_does_not_lose_what_the_others_reaped(
    broker: ClusterBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    worker = worker_on(0)
    jobs = ids_on(broker, 0, 1) + ids_on(broker, 1, 1)
    broker.queue_jobs(jobs)
    broker.beat(manager=M, token="m", workers={worker: "w"}, ttl=0.2)
    assert len(broker.take(manager=M, worker=worker, limit=2)) == 2
    broker.beat(manager=M, token="m", workers={}, ttl=30)

    def failing_over(**kwargs: Any) -> None:
        raise BrokerUnavailable("shard 2 is failing over")

    monkeypatch.setattr(broker._shards[2], "reap", failing_over)
    deadline = time.monotonic() + 20
    with caplog.at_level(logging.WARNING, logger="qw_redis.cluster"):
        while not (reaped := broker.reap(owner="r", lease=0, ttl=0.2)):
            assert time.monotonic() < deadline, "the worker was not reaped"
            time.sleep(0.02)
    assert [(r.worker, r.requeued) for r in reaped] == [(worker, 2)], "shards 0 and 1 reported"
    assert "reaping on shard 2 failed; its part is reaped in a later round" in caplog.text
    assert sorted(broker.queued_job_ids()) == sorted(job.id for job in jobs)
    assert broker.workers(M) == [worker], "still registered on shard 2"
    monkeypatch.undo()
    while broker.workers(M):  # the next rounds reap it there
        assert time.monotonic() < deadline, "shard 2's part was not reaped"
        broker.reap(owner="r", lease=0, ttl=0.2)
        time.sleep(0.02)


def test_every_shard_failing_to_reap_raises_for_the_reaper_to_retry(
    broker: ClusterBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_over(**kwargs: Any) -> None:
        raise BrokerUnavailable("failing over")

    for shard in broker._shards:
        monkeypatch.setattr(shard, "reap", failing_over)
    with pytest.raises(BrokerUnavailable, match="failing over"):
        broker.reap(owner="r", lease=0, ttl=0.2)


def test_a_shard_moved_to_another_primary_is_followed_on_the_next_call(
    broker: ClusterBroker, empty_cluster: LocalCluster
) -> None:
    tag = shard_tag(0, SHARDS)
    home = empty_cluster.primary_of(tag)
    jobs = ids_on(broker, 0, 3)
    broker.queue_jobs(jobs)
    old = broker.shards[0].describe()
    try:
        empty_cluster.migrate_slot(tag)
        assert broker.queued_count() == 3  # MOVED from the old owner, then asked of the new one
        assert broker.shards[0].describe() != old
        taken = broker.take(manager=M, worker=worker_on(0), limit=3)
        assert sorted(job.id for job in taken) == sorted(job.id for job in jobs)
    finally:
        empty_cluster.migrate_slot(tag, to=home)


def test_while_a_shards_slot_is_migrating_its_scripts_are_refused_and_nothing_is_taken(
    broker: ClusterBroker, empty_cluster: LocalCluster
) -> None:
    """A script whose declared keys are not all on the node (some moved, or not created
    yet) is refused with ``ASK``/``TRYAGAIN`` while the slot migrates: the broker says the
    shard is unavailable (callers wait), and no script runs on half a shard."""
    tag = shard_tag(0, SHARDS)
    source = empty_cluster.primary_of(tag)
    target = next(node for node in empty_cluster.primaries() if node is not source)
    jobs = ids_on(broker, 0, 2)
    broker.queue_jobs(jobs)
    worker = worker_on(0)
    with empty_cluster.client(source) as src, empty_cluster.client(target) as dst:
        slot = int(src.cluster("keyslot", tag))
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", empty_cluster.node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", empty_cluster.node_id(target))
        try:
            src.execute_command("MIGRATE", "127.0.0.1", target.port, tag + "all:jobs", 0, 10_000)
            with pytest.raises(BrokerUnavailable, match="being migrated"):
                broker.take(manager=M, worker=worker, limit=2)
        finally:
            while moved := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10_000, "KEYS", *moved)
            for node in empty_cluster.primaries():
                with empty_cluster.client(node) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", empty_cluster.node_id(target))
    try:
        assert broker.queued_job_ids() == [job.id for job in jobs], "nothing was taken meanwhile"
        assert broker.take(manager=M, worker=worker, limit=2) == jobs  # MOVED: on the new owner
    finally:
        empty_cluster.migrate_slot(tag, to=source)


# -- URLs ------------------------------------------------------------------------------------


def test_a_cluster_url_names_its_nodes_and_shards() -> None:
    parsed = parse("redis+cluster://u:pw@h1:7000,h2:7001/?shards=4&max_job_size=10&ssl_ca_certs=x")
    assert parsed.seeds == (("h1", 7000), ("h2", 7001))
    assert parsed.shards == 4
    assert parsed.node_url("h2", 7001) == "redis://u:pw@h2:7001/0?max_job_size=10&ssl_ca_certs=x"
    assert parse("rediss+cluster://h:1").node_url("h", 1) == "rediss://h:1/0"
    assert parse("redis+cluster://h:1").shards == 1


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://h1", "host:port"),
        ("redis+cluster://h1:7000,:7001", "host:port"),
        ("redis+cluster://h1:70000", "host:port"),
        ("redis+cluster://h1:7000/3", "database 0 only"),
        ("redis+cluster://h1:7000/?shards=0", "shards must be"),
        ("redis+cluster://h1:7000/?shards=two", "shards must be"),
    ],
)
def test_a_bad_cluster_url_is_refused_in_one_line(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why) as refused:
        parse(url)
    assert "\n" not in str(refused.value)


def test_qw_status_on_a_bad_cluster_url_says_what_is_wrong_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qw_cli", "status", "--url", "redis+cluster://127.0.0.1:7000/?shards=0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "qw: error: invalid Redis Cluster URL redis+cluster://127.0.0.1:7000/?shards=0: "
        "shards must be a whole number from 1 to 64"
    ]


def test_qw_status_reads_every_shard(broker: ClusterBroker, empty_cluster: LocalCluster) -> None:
    broker.queue_jobs([Job.new({"n": n}) for n in range(7)])
    result = subprocess.run(
        [sys.executable, "-m", "qw_cli", "status", "--url", empty_cluster.url + f"/?shards={SHARDS}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "7" in result.stdout


def test_nothing_answers_at_a_cluster_url_of_dead_nodes() -> None:
    with pytest.raises(BrokerUnavailable, match="no Redis Cluster node answered"):
        ClusterBroker("redis+cluster://127.0.0.1:1")


def test_the_tags_the_documentation_lists_are_the_ones_qw_uses() -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "cluster.md"
    listed = re.findall(r"^shards=(\d+)  (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(listed) == 6
    for shards, tags in listed:
        assert tags.split() == [shard_tag(i, int(shards)) for i in range(int(shards))]
