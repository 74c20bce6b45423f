"""A Sentinel failover in the middle of a drain: the primary is killed (or demoted) while a
manager's workers drain a few thousand jobs and a producer keeps queueing; count what
ran, what ran twice, and what was lost.

A primary, a replica and three Sentinels (``qwtest_sentinel``, failure detection tuned to
half a second) run on free ports; the jobs' target counts each run of each job in another
Redis started by the test (``qwtest_targets:count_runs``), which the failover does not
touch. Replication is asynchronous, so the README promises no more than this:

- a job that the replica had received is never lost: the drained jobs are all on the
  replica before the drain starts (the test waits for it with ``WAIT``), so every one
  must run; so must every job of the producer whose queueing returned (it asks for one
  replica with ``?wait_replicas=1``). One whose queueing raised may be lost (it is counted);
- a job whose take or finish the replica had not received may run again: one that ran
  while the workers still wrote to the old primary, or was in their hands then.

Each run prints its figures (``pytest -s`` shows them): the README quotes them.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import attrs
import pytest
import redis
from qwtest_redis import PrivateRedis
from qwtest_sentinel import SERVICE, SentinelSet
from reliability_support import (
    assert_each_job_in_one_place,
    queue,
    start_manager,
    stop_manager,
    wait_for,
    worker_pids,
)

from qw_core.errors import BrokerUnavailable, JobsNotReplicated
from qw_core.manager import Manager
from qw_core.models import Job
from qw_core.plugins import PluginConfig
from qw_core.worker import DEFAULT_PREFETCH
from qw_redis import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

JOBS = 3000
WORKERS = 3


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """The Redis the jobs count their runs in (not the one that fails over)."""
    with PrivateRedis() as server:
        monkeypatch.setenv("QWTEST_REDIS_URL", server.url())
        client = redis.Redis.from_url(server.url(), decode_responses=True)
        yield client
        client.close()


def _total(counter: redis.Redis) -> int:
    return int(counter.get("qwtest:total") or 0)


def _state(new: redis.Redis, counter: redis.Redis, manager: Manager) -> str:
    """What a test that waited in vain for the workers on the new primary reports."""
    try:
        replication = new.info("replication")
        role = f"{replication['role']}, {replication.get('connected_slaves')} replica(s)"
    except redis.RedisError as exc:
        role = f"INFO failed: {exc}"
    try:
        new.set("qwtest:probe", 1)
        writes = "accepted"
    except redis.RedisError as exc:
        writes = f"refused: {exc}"
    lists = {key: new.llen(key) for key in new.scan_iter(match="*:jobs") if new.type(key) == "list"}
    alive = [(s.name, s.process.exitcode) for s in manager._slots if s.process is not None]
    return (
        f"new primary: {role}; writes {writes}; lists {lists}; runs {_total(counter)}; "
        f"workers (name, exit code) {alive}; heartbeats {sorted(new.scan_iter(match='qw:hb:*'))}"
    )


def _queued_if_writable(url: str) -> list[str] | None:
    """The id of one job queued on ``url``'s primary, in a list; ``None`` while it refuses
    writes (with ``min-replicas-to-write``, until its replica has synced)."""
    try:
        return queue(url, [Job.new({"marker": True})])
    except BrokerUnavailable:
        return None


def _held_anywhere(client: redis.Redis) -> int:
    """Ids left on any queue or worker's list of ``client``'s server."""
    return sum(client.llen(key) for key in client.scan_iter(match="*:jobs") if client.type(key) == "list")


@attrs.define
class Producer:
    """Queues one job at a time, each waiting for one replica, until stopped: what
    returned is ``confirmed``; what raised ``JobsNotReplicated``, ``unconfirmed``; a call
    that failed as an outage is sent again with the same job (same id)."""

    url: str
    confirmed: list[str] = attrs.field(factory=list)
    unconfirmed: list[str] = attrs.field(factory=list)
    outages: int = 0
    stop: threading.Event = attrs.field(factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        broker = RedisBroker.from_url(self.url + "?wait_replicas=1&wait_timeout=0.2")
        try:
            while not self.stop.wait(0.01):  # pacing: about 100 jobs a second at most
                job = Job.new({"producer": True})
                while not self.stop.is_set():
                    try:
                        broker.queue_jobs([job])
                        self.confirmed.append(job.id)
                        break
                    except JobsNotReplicated:
                        self.unconfirmed.append(job.id)
                        break
                    except BrokerUnavailable:
                        self.outages += 1
                        self.stop.wait(0.05)
        finally:
            broker.close()

    def join(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    @property
    def ids(self) -> list[str]:
        return self.confirmed + self.unconfirmed


#: ``min-replicas-to-write 1``: a primary whose replica left refuses writes (``NOREPLICAS``).
MIN_REPLICAS = ("--min-replicas-to-write", "1")


@pytest.mark.parametrize(
    ("how", "server_args"),
    [("kill", ()), ("demote", ()), ("demote", MIN_REPLICAS)],
    ids=["kill", "demote", "demote-min-replicas"],
)
def test_a_failover_mid_drain_pauses_the_workers_who_finish_every_job_on_the_new_primary(
    counter: redis.Redis, how: str, server_args: tuple[str, ...]
) -> None:
    """``kill``: SIGKILL of the primary; ``demote``: ``SENTINEL FAILOVER``, after which the
    old primary lives on (taking writes until the Sentinels reconfigure it as a replica,
    then answering them with ``READONLY``), unless ``min-replicas-to-write`` makes it
    refuse them as soon as its replica leaves to be promoted."""
    with SentinelSet(server_args=server_args) as sentinels:
        url = sentinels.url()
        old_port = sentinels.primary.port
        ids = queue(url, [Job.new({"i": i}) for i in range(JOBS)])
        # Every job is on the replica before the drain: what follows measures the drain alone.
        assert sentinels.client(old_port).wait(1, 10_000) == 1
        producer = Producer(url)
        manager = start_manager(
            url,
            "fo",
            target="qwtest_targets:count_runs",
            num_workers=WORKERS,
            plugins=PluginConfig(modules=("qwtest_targets.worker_logs",), entry_points=False),
        )
        try:
            producer.start()
            wait_for(lambda: _total(counter) >= JOBS // 3, timeout=60, what="a third of the jobs to run")
            pids = worker_pids(manager)
            killed_at, ran_at_kill = time.monotonic(), _total(counter)
            if how == "kill":
                sentinels.primary.kill()
            else:
                assert sentinels.sentinel_client().execute_command("SENTINEL", "FAILOVER", SERVICE)
            new_port = sentinels.wait_for_failover(old_port)
            failed_over_at = time.monotonic()
            new = sentinels.client(new_port)
            queued_then = new.llen("all:jobs")
            markers: list[str] = []
            if not queued_then:  # drained before the Sentinels were done (a slow machine)
                markers = wait_for(lambda: _queued_if_writable(url), what="the new primary to take writes")

            def took() -> bool:
                """A backlog on the new primary shrank, or, with none, a job queued there ran."""
                if markers:
                    return bool(counter.hexists("qwtest:runs", markers[0]))
                return bool(new.llen("all:jobs") < queued_then)

            try:
                wait_for(took, timeout=30, what="a take on the new primary")
            except pytest.fail.Exception:
                state = _state(new, counter, manager)
                pytest.fail(f"no take on the new primary within 30 s ({queued_then} queued then): {state}")
            resumed_at, ran_at_resume = time.monotonic(), _total(counter)
            producer.join()
            everything = ids + producer.ids + markers
            wait_for(lambda: _held_anywhere(new) == 0, timeout=60, what="every queued job to be finished")
            assert worker_pids(manager) == pids, "a worker died of the failover instead of waiting it out"
            assert new.exists("qw:hb:fo"), "the manager's heartbeat is not on the new primary"
        finally:
            producer.stop.set()
            stop_manager(manager)
        runs = {job_id: int(count) for job_id, count in counter.hgetall("qwtest:runs").items()}
        places = assert_each_job_in_one_place(new, everything)
    times = sorted(float(at) for at in counter.lrange("qwtest:at", 0, -1))
    pause = max(later - earlier for earlier, later in itertools.pairwise(times))  # no job ran for this long
    lost = [job_id for job_id in everything if job_id not in runs]
    twice = [job_id for job_id, count in runs.items() if count > 1]
    print(
        f"\nfailover mid-drain ({how}{' '.join(('', *server_args))}): {JOBS} jobs queued before, "
        f"{len(producer.ids)} during "
        f"({len(producer.unconfirmed)} unconfirmed, {producer.outages} outages); lost {len(lost)} "
        f"({sum(job_id in producer.unconfirmed for job_id in lost)} of them unconfirmed); "
        f"ran twice {len(twice)}, three times or more {sum(c > 2 for c in runs.values())}; "
        f"{ran_at_resume - ran_at_kill} ran between the failure and the first take on the new primary; "
        f"the Sentinels named it after {failed_over_at - killed_at:.2f} s, workers took from it after "
        f"{resumed_at - killed_at:.2f} s at most; no job ran for {pause:.2f} s"
    )
    assert not [job_id for job_id in lost if job_id not in producer.unconfirmed], "a confirmed job was lost"
    assert set(places.values()) == {"finished"}
    assert all(count <= 2 for count in runs.values()), "a job ran three times"
    # A second run needs a take or a finish the new primary never received: the jobs that
    # ran while the workers could still write to the old primary (none could with
    # min-replicas-to-write: it refuses writes once its replica leaves to be promoted), and
    # those in their hands or finished but not reported yet (a batch each, and the one before).
    window = 0 if server_args == MIN_REPLICAS else ran_at_resume - ran_at_kill
    assert len(twice) <= window + WORKERS * 2 * (DEFAULT_PREFETCH + 1)
