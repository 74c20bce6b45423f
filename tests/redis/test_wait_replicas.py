"""Queueing that waits for replicas (``RedisOptions.wait_replicas``, ``?wait_replicas=N``).

A primary and one replica of this module's own; a test that pauses the replica (SIGSTOP)
shows that queueing cannot return before the replica has the jobs, and asking for more
replicas than there are shows the error: the jobs are queued, and it says so.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner
from qwtest_redis import PrivateRedis
from qwtest_wait import wait_for

from qw_cli.main import main
from qw_core.errors import ConfigurationError, JobsNotReplicated
from qw_core.models import Job
from qw_redis import RedisBroker, RedisOptions
from qw_redis.broker import QUEUE_BATCH

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[PrivateRedis, PrivateRedis]]:
    with (
        PrivateRedis(["--repl-diskless-sync-delay", "0"]) as primary,
        PrivateRedis(["--replicaof", "127.0.0.1", str(primary.port)]) as replica,
    ):
        client = redis.Redis(port=primary.port, decode_responses=True)
        wait_for(
            lambda: client.info("replication").get("connected_slaves") == 1, what="the replica to connect"
        )
        yield primary, replica


@pytest.fixture
def primary(pair: tuple[PrivateRedis, PrivateRedis]) -> Iterator[redis.Redis]:
    client = redis.Redis(port=pair[0].port, decode_responses=True)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def replica(pair: tuple[PrivateRedis, PrivateRedis], primary: redis.Redis) -> Iterator[redis.Redis]:
    client = redis.Redis(port=pair[1].port, decode_responses=True)
    yield client
    client.close()


def test_queueing_returns_only_once_the_replica_has_the_jobs(
    pair: tuple[PrivateRedis, PrivateRedis], primary: redis.Redis, replica: redis.Redis
) -> None:
    broker = RedisBroker.from_url(pair[0].url(), RedisOptions(wait_replicas=1, wait_timeout=4.0))
    process = pair[1].process
    assert process is not None
    continued = threading.Event()

    def resume() -> None:
        continued.set()
        os.kill(process.pid, signal.SIGCONT)

    os.kill(process.pid, signal.SIGSTOP)  # the replica takes nothing in until resumed
    timer = threading.Timer(0.3, resume)
    timer.start()
    try:
        jobs = [Job.new({"n": n}) for n in range(3)]
        broker.queue_jobs(jobs)
        assert continued.is_set(), "queueing returned while the replica was stopped"
        assert replica.lrange("all:jobs", 0, -1) == [job.id for job in reversed(jobs)]
        later = Job.new({"n": 9})
        broker.queue_jobs([later], delay=60)
        assert replica.zrange("qw:delayed:all", 0, -1) == [later.id]
    finally:
        timer.cancel()
        os.kill(process.pid, signal.SIGCONT)
        broker.close()


def test_too_few_replicas_in_time_is_an_error_that_says_the_jobs_are_queued(
    pair: tuple[PrivateRedis, PrivateRedis], primary: redis.Redis
) -> None:
    # One replica of the two asked for: WAIT runs out. A second is long enough for the one
    # there to acknowledge even on a loaded machine.
    broker = RedisBroker.from_url(pair[0].url(), RedisOptions(wait_replicas=2, wait_timeout=1.0))
    jobs = [Job.new({"n": n}) for n in range(QUEUE_BATCH + 10)]  # two script calls: the first fails
    try:
        with pytest.raises(JobsNotReplicated) as caught:
            broker.queue_jobs(jobs)
    finally:
        broker.close()
    error = caught.value
    first, rest = [job.id for job in jobs[:QUEUE_BATCH]], [job.id for job in jobs[QUEUE_BATCH:]]
    assert (error.job_ids, error.confirmed, error.not_queued) == (tuple(first), (), tuple(rest))
    assert (error.wanted, error.acknowledged) == (2, 1)
    assert sorted(primary.lrange("all:jobs", 0, -1)) == sorted(first)  # queued, as it says
    message = str(error)
    assert f"{QUEUE_BATCH} job(s) are queued on the primary of redis://127.0.0.1:" in message
    assert "1 of the 2 replica(s) asked for acknowledged them within 1s" in message
    assert "do not queue them again as new jobs" in message


def test_the_url_asks_for_replicas_and_qw_enqueue_prints_the_ids_it_queued_before_the_error(
    pair: tuple[PrivateRedis, PrivateRedis], primary: redis.Redis
) -> None:
    url = pair[0].url() + "?wait_replicas=2&wait_timeout=0.1"
    env = {name: None for name in os.environ if name.startswith("QW_")}
    result = CliRunner().invoke(main, ["enqueue", "--url", url, '{"n": 1}'], env=env, catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout.split() == primary.lrange("all:jobs", 0, -1)
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("qw: error: 1 job(s) are queued on the primary of redis://127.0.0.1:")
    assert line.endswith("(their ids are printed above)")
    ok = CliRunner().invoke(
        main,
        ["enqueue", "--url", pair[0].url() + "?wait_replicas=1", '{"n": 2}'],
        env=env,
        catch_exceptions=False,
    )
    assert ok.exit_code == 0, ok.output


def test_the_wait_must_end_before_the_socket_timeout() -> None:
    with pytest.raises(
        ConfigurationError, match=r"socket_timeout \(5.0s\) must exceed wait_timeout \(5.0s\)"
    ):
        RedisOptions(wait_replicas=1, wait_timeout=5.0)
    with pytest.raises(ConfigurationError, match="wait_timeout"):
        RedisBroker.from_url("redis://127.0.0.1:1/0?wait_replicas=1&wait_timeout=9")


def test_a_unique_job_waits_for_the_replica_and_says_which_job_holds_its_key(
    pair: tuple[PrivateRedis, PrivateRedis], primary: redis.Redis, replica: redis.Redis
) -> None:
    broker = RedisBroker.from_url(pair[0].url(), RedisOptions(wait_replicas=1, wait_timeout=4.0))
    try:
        first = Job.new({"n": 1})
        assert broker.queue_job(first, unique="k") == first.id
        assert broker.queue_job(Job.new({"n": 2}), unique="k") == first.id
        assert broker.queue_job(Job.new({"n": 3}), unique="k", delay=60) == first.id
        assert replica.lrange("all:jobs", 0, -1) == [first.id]
        assert replica.get("qw:unique:k") == f"e:{first.id}"
    finally:
        broker.close()
