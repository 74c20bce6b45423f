"""Redis faults: a restart while jobs run, connections killed mid-wait, a failover, and a
server that may evict keys (issue 5, tests 6 and 7, and the failover and eviction cases).

Real redis-server: a private one per module, with an append-only file, so killing and
restarting it loses nothing it acknowledged. Every test ends with the "exactly one
place" invariant.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from qwtest_redis import PrivateRedis
from reliability_support import (
    ManagerProcess,
    assert_each_job_in_one_place,
    queue,
    records,
    runs,
    start_manager,
    stop_manager,
    wait_for,
    worker_pids,
)

from qw_core.errors import BrokerUnavailable
from qw_core.models import Job
from qw_redis import RedisBroker
from qw_redis.connection import translate

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def blocked_clients(client: redis.Redis) -> list[dict[str, str]]:
    """The connections waiting in BLPOP (idle workers)."""
    return [c for c in client.client_list() if c["cmd"] == "blpop"]


def nothing_happens(directory: Path, kinds: tuple[str, ...], seconds: float) -> None:
    """Watch for ``seconds`` that no record of ``kinds`` appears (an observation window)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = [row for kind in kinds for row in records(directory, kind)]
        assert not seen, seen
        time.sleep(0.05)


def test_6_redis_killed_and_restarted_while_jobs_run(
    server: PrivateRedis, url: str, client: redis.Redis, record_dir: Path
) -> None:
    job_ids = queue(url, [Job.new({"sleep": 0.05, "n": n}) for n in range(40)])
    manager = start_manager(url, "t6")
    try:
        workers = worker_pids(manager)
        wait_for(lambda: len(runs(record_dir)) >= 8, what="some jobs to run")
        server.kill()
        down_at = time.monotonic()
        while time.monotonic() - down_at < 3.0:  # the outage: longer than the 1 s TTL
            time.sleep(0.1)
        server.start()
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), timeout=30, what="every job to run")
        wait_for(lambda: not client.exists("all:jobs"), what="the queue to drain")
        # After the outage every heartbeat had lapsed; the reaper must wait, not reap.
        nothing_happens(record_dir, ("reaped", "died"), seconds=2.5)
        assert client.smembers("t6:workers") == {f"t6.{pid}" for pid in workers}
        assert worker_pids(manager) == workers, "no worker process died"
    finally:
        stop_manager(manager)
    assert all(count == 1 for count in runs(record_dir).values()), runs(record_dir)
    where = assert_each_job_in_one_place(client, job_ids)
    assert set(where.values()) == {"finished"}


def test_7_connections_killed_mid_wait_reconnect_and_nothing_runs_twice(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    manager = start_manager(url, "t7")
    job_ids: list[str] = []
    try:
        workers = worker_pids(manager)
        for round_ in range(5):
            blocked = wait_for(lambda: len(blocked_clients(client)) == 2 and blocked_clients(client))
            for connection in blocked:
                client.client_kill_filter(_id=connection["id"])
            job_ids += queue(url, [Job.new({"round": round_, "n": n}) for n in range(5)])
            expected = set(job_ids)
            wait_for(lambda: set(runs(record_dir)) == expected, what=f"round {round_}")  # noqa: B023 - called in this iteration
        assert worker_pids(manager) == workers
        assert records(record_dir, "died") == []
    finally:
        stop_manager(manager)
    assert all(count == 1 for count in runs(record_dir).values())
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}


def test_a_failover_read_only_and_unblocked_errors_are_waited_out(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    manager = start_manager(url, "fo")
    try:
        workers = worker_pids(manager)
        wait_for(lambda: len(blocked_clients(client)) == 2, what="idle workers")
        client.replicaof("127.0.0.1", "1")  # a replica now (of nothing): UNBLOCKED, then READONLY
        client.replicaof("NO", "ONE")  # promoted back, as a failover would a new master
        job_ids = queue(url, [Job.new({"n": n}) for n in range(10)])
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), what="the jobs after the failover")
        assert worker_pids(manager) == workers
        assert records(record_dir, "died") == []
    finally:
        stop_manager(manager)
    assert all(count == 1 for count in runs(record_dir).values())
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}


def test_failover_replies_are_reported_as_a_lost_connection() -> None:
    for exc in (
        redis.ReadOnlyError("You can't write against a read only replica."),
        redis.ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"),
    ):
        assert isinstance(translate(exc, "redis://x:6379/0"), BrokerUnavailable)
    assert not isinstance(translate(redis.ResponseError("WRONGTYPE"), "redis://x:6379/0"), BrokerUnavailable)


@pytest.fixture
def evicting(client: redis.Redis) -> Iterator[None]:
    client.config_set("maxmemory-policy", "allkeys-lru")
    yield
    client.config_set("maxmemory-policy", "noeviction")


def test_a_manager_warns_when_redis_may_evict_keys(
    url: str, evicting: None, caplog: pytest.LogCaptureFixture
) -> None:
    broker = RedisBroker.from_url(url)
    try:
        [warning] = broker.setup_warnings()
        assert "maxmemory-policy allkeys-lru" in warning
    finally:
        broker.close()
    with caplog.at_level(logging.WARNING, logger="qw.manager"):
        stop_manager(start_manager(url, "ev", num_workers=1))
    assert any("allkeys-lru" in message for message in caplog.messages)


def test_no_warning_with_noeviction(url: str) -> None:
    broker = RedisBroker.from_url(url)
    try:
        assert broker.setup_warnings() == []
    finally:
        broker.close()


def test_after_redis_was_unreachable_past_the_ttl_no_live_worker_is_reaped(
    server: PrivateRedis, url: str, client: redis.Redis, record_dir: Path
) -> None:
    """Redis stops answering (paused) for longer than the heartbeat TTL, and comes back
    with every heartbeat lapsed and its uptime unbroken (no restart for the reaper's uptime
    guard to see). A manager whose calls failed meanwhile gives every manager a TTL to beat
    again before it judges anyone dead: here m2's manager beats again 0.8 s after Redis is
    back (it was paused a little longer), well within the 1.5 s TTL, and none of its
    workers, running jobs all along, may be reaped."""
    quick = f"{url}?socket_timeout=0.8"  # calls to a paused Redis fail (an outage), not hang
    job_ids = queue(url, [Job.new({"sleep": 5, "n": n}) for n in range(4)])
    m1, m2 = (
        ManagerProcess(quick, name, "--heartbeat", "0.3s", "--heartbeat-ttl", "1.5s", record_dir=record_dir)
        for name in ("m1", "m2")
    )
    try:
        wait_for(lambda: len(runs(record_dir, "began")) == 4, what="every job to start")
        wait_for(lambda: client.smembers("m2:workers"), what="m2's workers")
        assert server.process is not None
        m2.signal(signal.SIGSTOP)
        server.process.send_signal(signal.SIGSTOP)
        time.sleep(2.5)  # the outage itself, longer than the TTL: no event to wait for
        server.process.send_signal(signal.SIGCONT)
        time.sleep(0.8)
        m2.signal(signal.SIGCONT)
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), timeout=30, what="every job to end")
        nothing_happens(record_dir, ("reaped",), seconds=1.0)
        m1.signal(signal.SIGTERM)
        m2.signal(signal.SIGTERM)
        assert m1.wait() == 0, m1.output()
        assert m2.wait() == 0, m2.output()
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        m1.close()
        m2.close()
    assert records(record_dir, "reaped") == [], "a live worker was taken for dead"
    assert all(count == 1 for count in runs(record_dir, "began").values()), "no job ran twice"
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}
