"""The reaper at scale: five reapers racing over the same dead workers, and a dead worker
holding 100,000 jobs drained in batches without stalling anyone (issue 5, tests 8 and 10).

Real redis-server (a private one for the module), driven through the broker API directly.
Both end with the "exactly one place" invariant.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from reliability_support import assert_each_job_in_one_place, wait_for

from qw_core.broker import Reaped
from qw_core.liveness import Liveness, LivenessSettings
from qw_core.models import Job
from qw_redis import RedisBroker
from qw_redis.scripts import RECOVER_BATCH

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TTL = 0.3


@pytest.fixture
def broker(url: str, client: redis.Redis) -> Iterator[RedisBroker]:
    # The reaper judges nobody dead on a server up for less than a TTL (a restart).
    wait_for(lambda: int(client.info("server")["uptime_in_seconds"]) >= 1, what="the server's first second")
    opened = RedisBroker.from_url(url)
    yield opened
    opened.close()


def lapse(client: redis.Redis, *names: str) -> None:
    wait_for(lambda: client.exists(*(f"qw:hb:{name}" for name in names)) == 0, what="heartbeats to lapse")


def race(url: str, count: int, *, lease: float) -> list[list[Reaped] | None]:
    """``count`` reapers, each with its own connection, started together."""
    brokers = [RedisBroker.from_url(url) for _ in range(count)]
    start = threading.Barrier(count)
    results: list[list[Reaped] | None] = [None] * count

    def reap(index: int) -> None:
        start.wait()
        results[index] = brokers[index].reap(owner=f"reaper-{index}", lease=lease, ttl=TTL)

    threads = [threading.Thread(target=reap, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for opened in brokers:
        opened.close()
    return results


def test_8_five_racing_reapers_move_each_job_once(url: str, client: redis.Redis, broker: RedisBroker) -> None:
    workers = [f"dead.{pid}" for pid in range(100, 120)]
    shared = [Job.new({"n": n}) for n in range(6000)]
    private = [Job.new({"n": n}, manager="dead") for n in range(4000)]
    direct = [Job.new({"n": n}, worker=workers[n % 20]) for n in range(40)]
    broker.queue_jobs([*shared, *private])
    broker.beat(manager="dead", token="m", workers={w: f"t{w}" for w in workers}, ttl=TTL)
    for worker in workers:
        taken: list[str] = []
        for _ in range(5):
            taken += [job.id for job in broker.take(manager="dead", worker=worker, held=taken, limit=100)]
    broker.queue_jobs(direct)  # sent to the workers directly, never taken
    held = sum(client.llen(f"{w}:jobs") for w in workers)
    assert held == 10_000 + 40
    lapse(client, "dead", *workers)

    results = race(url, 5, lease=0)
    reaped = [r for result in results for r in result or ()]
    assert sum(r.requeued for r in reaped) == held, "each job moved once"
    assert {r.worker for r in reaped} == set(workers)
    assert client.hvals("qw:recoveries") == ["1"] * held, "each job counted once"
    queued = client.lrange("all:jobs", 0, -1) + client.lrange("dead:jobs", 0, -1)
    assert len(queued) == len(set(queued)) == held
    all_ids = [job.id for job in (*shared, *private, *direct)]
    where = assert_each_job_in_one_place(client, all_ids)
    assert {where[job.id] for job in shared} == {"all:jobs"}
    assert {where[job.id] for job in (*private, *direct)} == {"dead:jobs"}
    assert client.smembers("all:managers") == set(), "the dead manager is forgotten"
    assert not client.exists("dead:workers", "qw:managers")


def test_8_the_lease_lets_one_reaper_of_five_work(url: str, client: redis.Redis, broker: RedisBroker) -> None:
    broker.queue_jobs([Job.new({"n": 1})])
    broker.beat(manager="dead", token="m", workers={"dead.1": "w"}, ttl=TTL)
    [job] = broker.take(manager="dead", worker="dead.1")
    lapse(client, "dead", "dead.1")
    results = race(url, 5, lease=30)
    assert sum(result is not None for result in results) == 1
    assert client.get("qw:reaper") in {f"reaper-{i}" for i in range(5)}
    assert assert_each_job_in_one_place(client, [job.id]) == {job.id: "all:jobs"}


def _probe(url: str, stop: Any, slowest: Any, calls: Any) -> None:
    client = redis.Redis.from_url(url)
    while not stop.is_set():
        for command in (("PING",), ("LLEN", "all:jobs")):
            started = time.perf_counter()
            client.execute_command(*command)
            slowest.value = max(slowest.value, time.perf_counter() - started)
            calls.value += 1


class LatencyProbe:
    """Another client, in a process of its own (so it never waits for this one's GIL),
    sending PING and LLEN in a loop: the slowest reply it waited for."""

    def __init__(self, url: str) -> None:
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._slowest = context.Value("d", 0.0, lock=False)
        self._calls = context.Value("q", 0, lock=False)
        self._process = context.Process(target=_probe, args=(url, self._stop, self._slowest, self._calls))

    @property
    def slowest(self) -> float:
        return float(self._slowest.value)

    @property
    def calls(self) -> int:
        return int(self._calls.value)

    def __enter__(self) -> LatencyProbe:
        self._process.start()
        wait_for(lambda: self.calls > 100, what="the probe to run")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(timeout=10)


def test_a_worker_that_stops_after_the_reaper_listed_it_is_not_reaped(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A warm stop deregisters the worker (heartbeat gone, nothing held) between the reaper's
    # listing and its atomic step: it is gone, not dead, and no qw_worker_reaped may fire.
    broker.beat(manager="m", token="m", workers={"m.1": "w1", "m.2": "w2"}, ttl=TTL)
    lapse(broker._client, "m.1", "m.2")
    reap_one = broker._recover

    def stopped_meanwhile(manager: str, worker: str, **kwargs: Any) -> Reaped | None:
        if worker == "m.1":
            broker.deregister_worker(manager=manager, worker=worker)
        return reap_one(manager, worker, **kwargs)

    monkeypatch.setattr(broker, "_recover", stopped_meanwhile)
    reaped = broker.reap(owner="reaper", lease=0, ttl=TTL)
    assert reaped == [Reaped(manager="m", worker="m.2", requeued=0, failed=0)], "only the dead one"


def test_a_worker_that_beats_again_after_the_reaper_listed_it_keeps_its_jobs(
    broker: RedisBroker, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its manager's heartbeat lands between the reaper's listing (no heartbeat) and its
    # atomic step: the step checks again, finds it alive, and moves nothing.
    broker.queue_jobs([Job.new({"n": n}) for n in range(3)])
    broker.beat(manager="m", token="m", workers={"m.1": "w1"}, ttl=TTL)
    held = broker.take(manager="m", worker="m.1", limit=3)
    lapse(client, "m.1")
    reap_one = broker._recover

    def beat_meanwhile(manager: str, worker: str, **kwargs: Any) -> Reaped | None:
        broker.beat(manager="m", token="m", workers={"m.1": "w1"}, ttl=30)
        return reap_one(manager, worker, **kwargs)

    monkeypatch.setattr(broker, "_recover", beat_meanwhile)
    assert broker.reap(owner="reaper", lease=0, ttl=TTL) == []
    assert broker.held_job_ids("m.1") == [job.id for job in held]
    assert broker.workers("m") == ["m.1"]


def test_a_manager_that_beats_again_after_the_reaper_listed_it_is_not_forgotten(
    broker: RedisBroker, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its heartbeat lands between the reaper's listing (no heartbeat, no workers) and the
    # step that forgets it: the step checks again and keeps the live manager.
    broker.beat(manager="m", token="m", workers={}, ttl=TTL)
    lapse(client, "m")
    forget = broker._scripts.forget_manager
    asked: list[str] = []

    def beat_meanwhile(manager: str) -> bool:
        asked.append(manager)
        broker.beat(manager="m", token="m", workers={}, ttl=30)
        return forget(manager)

    monkeypatch.setattr(broker._scripts, "forget_manager", beat_meanwhile)
    assert broker.reap(owner="reaper", lease=0, ttl=TTL) == []
    assert asked == ["m"], "the reaper listed it as dead"
    assert broker.managers() == ["m"]
    assert client.hget("qw:managers", "m") == "m"


def test_a_manager_whose_own_heartbeat_is_late_reaps_nobody(broker: RedisBroker, client: redis.Redis) -> None:
    # Its heartbeat thread falls behind (a slow host, a long pause) while its workers run
    # on: their heartbeats lapse. Its reaper must wait for its own next beat, which vouches
    # for them again, rather than take them for dead.
    broker.queue_jobs([job := Job.new({"n": 1})])
    resume = threading.Event()
    beats = 0
    reaped: list[Reaped] = []

    def workers() -> dict[str, str]:  # called by each beat, on the heartbeat thread
        nonlocal beats
        beats += 1
        if beats > 1:
            resume.wait(30)  # the heartbeat thread is behind
        return {"m.1": "w1"}

    settings = LivenessSettings(heartbeat=0.1, ttl=TTL, reap_interval=0.05)
    live = Liveness(
        broker.factory(), manager="m", token="m", settings=settings, workers=workers, on_reaped=reaped.append
    )
    live.start()
    try:
        wait_for(lambda: broker.workers("m") == ["m.1"], what="the first heartbeat")
        assert broker.take(manager="m", worker="m.1") == [job]
        lapse(client, "m.1")
        time.sleep(20 * settings.reap_every)  # the reaper's chances: none may reap
        assert reaped == []
        resume.set()
        wait_for(lambda: client.exists("qw:hb:m.1"), what="the late heartbeat")
    finally:
        resume.set()
        live.stop()
    assert reaped == []
    assert broker.held_job_ids("m.1") == [job.id]
    assert broker.workers("m") == ["m.1"]


def test_the_reaper_judges_nobody_dead_while_redis_has_been_up_for_less_than_a_ttl(
    broker: RedisBroker, client: redis.Redis
) -> None:
    # After a restart, heartbeats written before it may be gone, and nobody could write any
    # while it was down: a lapsed heartbeat then says nothing about who is alive.
    broker.queue_jobs([Job.new({"n": 1})])
    broker.beat(manager="m", token="m", workers={"m.1": "w1"}, ttl=TTL)
    [job] = broker.take(manager="m", worker="m.1")
    lapse(client, "m.1")
    uptime = int(client.info("server")["uptime_in_seconds"])
    assert broker.reap(owner="reaper", lease=0, ttl=uptime + 60) is None
    assert broker.held_job_ids("m.1") == [job.id], "nothing moved"
    [reaped] = broker.reap(owner="reaper", lease=0, ttl=TTL) or [None]
    assert reaped == Reaped(manager="m", worker="m.1", requeued=1, failed=0)


def test_one_managers_broken_workers_key_does_not_stop_the_reaper_for_the_others(
    broker: RedisBroker, client: redis.Redis
) -> None:
    broker.queue_jobs([Job.new({"n": 1})])
    broker.beat(manager="ok", token="ok", workers={"ok.1": "w1"}, ttl=TTL)
    [job] = broker.take(manager="ok", worker="ok.1")
    broker.beat(manager="bad", token="bad", workers={}, ttl=30)
    client.set("bad:workers", "another program's string")
    lapse(client, "ok.1")
    assert broker.reap(owner="reaper", lease=0, ttl=TTL) == [
        Reaped(manager="ok", worker="ok.1", requeued=1, failed=0)
    ]
    assert client.lrange("all:jobs", 0, -1) == [job.id]
    assert any("bad:workers is a string" in problem for problem in broker.problems())


@pytest.mark.serial  # a wall-clock bound: measured with no other test running
def test_10_a_dead_worker_holding_100_000_jobs_is_drained_in_batches_without_stalling_redis(
    url: str, client: redis.Redis, broker: RedisBroker
) -> None:
    count = 100_000
    job_ids = [f"big-{n:06d}" for n in range(count)]
    for start in range(0, count, 10_000):
        chunk = job_ids[start : start + 10_000]
        pipe = client.pipeline(transaction=False)
        pipe.rpush("big.1:jobs", *chunk)  # taken, as take.lua leaves them: origin recorded
        pipe.hset("qw:origin", mapping=dict.fromkeys(chunk, ""))
        for job_id in chunk:
            pipe.hset(f"job:{job_id}", "n", job_id)
        pipe.execute()
    broker.beat(manager="big", token="m", workers={"big.1": "w"}, ttl=TTL)
    lapse(client, "big.1")
    client.config_set("slowlog-log-slower-than", 1_000)  # microseconds: the script calls
    client.slowlog_reset()

    with LatencyProbe(url) as probe:
        calls_before = probe.calls
        started = time.perf_counter()
        [reaped] = broker.reap(owner="reaper", lease=0, ttl=TTL) or []
        took = time.perf_counter() - started
        calls_during = probe.calls - calls_before
    batches = sorted(entry["duration"] / 1000 for entry in client.slowlog_get(1000))

    assert (reaped.worker, reaped.requeued, reaped.failed) == ("big.1", count, 0)
    # One script moving all 100,000 ids takes 300 ms and more; a batch takes a few ms. The
    # bound leaves a loaded machine 20 times a batch's time, and still catches the first.
    assert probe.slowest < 0.100, f"a call waited {probe.slowest * 1000:.1f} ms"
    assert max(batches, default=0) < 100, f"a script ran {max(batches):.1f} ms"
    assert calls_during > count // RECOVER_BATCH, "other clients were served between the batches"
    assert client.lrange("all:jobs", -3, -1) == job_ids[2::-1], "the oldest taken is next in line"
    print(
        f"\n100,000 held ids recovered in {took:.2f} s; slowest other call {probe.slowest * 1000:.1f} ms; "
        f"{len(batches)} script calls over 1 ms, the longest {max(batches, default=0):.1f} ms"
    )
    where = assert_each_job_in_one_place(client, job_ids)
    assert set(where.values()) == {"all:jobs"}
