"""Error replies and hostile data: Redis out of memory or busy, jobs whose data is not
UTF-8 or not a hash, a queue key of the wrong type, an enqueue retried after a stall, and
a host whose clock is wrong (issue 10, items 2 to 6).

Each was found by an adversarial test against a private redis-server and lost a job,
stalled a queue, or ran a job twice or with data it was not queued with. A private server
per module (with an append-only file, and a 100 ms busy-script threshold); test-sized
timings (heartbeat 0.2 s, TTL 1 s). Every test ends with the "exactly one place" invariant.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import redis
from qwtest_proxy import ReplyLosingProxy
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

from qw_core.errors import BackendError
from qw_core.models import Failure, Job
from qw_core.policy import FailedLimits
from qw_core.testing import poll_take
from qw_redis import RedisBroker
from qw_redis.connection import RedisOptions
from qw_redis.scripts import script_source

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: The managers' heartbeat settings in the fault tests, and how long each fault lasts:
#: well past the TTL, so every heartbeat lapses.
FAULT_FLAGS = ("--heartbeat", "0.3s", "--heartbeat-ttl", "1.5s")
FAULT_SECONDS = 3.0
#: A script that keeps Redis busy for ARGV[1] seconds (others get BUSY after 100 ms).
BUSY_SCRIPT = "local t0 = redis.call('TIME')[1] while redis.call('TIME')[1] - t0 < tonumber(ARGV[1]) do end"


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateRedis]:
    args = ["--appendonly", "yes", "--appendfsync", "always", "--busy-reply-threshold", "100"]
    with PrivateRedis(args) as private:
        yield private


def hold(seconds: float) -> None:
    """Let a fault last ``seconds`` (the length of the outage is what is tested)."""
    time.sleep(seconds)


def both_managers(url: str, record_dir: Path) -> tuple[ManagerProcess, ManagerProcess]:
    return tuple(ManagerProcess(url, name, *FAULT_FLAGS, record_dir=record_dir) for name in ("m1", "m2"))  # type: ignore[return-value]


def not_live(client: redis.Redis, manager: str) -> list[str]:
    """What keeps ``manager`` from counting as registered and beating, with its two workers
    beating (nothing: it does)."""
    workers = sorted(client.smembers(f"{manager}:workers"))
    missing = []
    if manager not in client.smembers("all:managers"):
        missing.append(f"{manager} not in all:managers")
    if not client.hexists("qw:managers", manager):
        missing.append(f"{manager} not in qw:managers")
    if len(workers) != 2:
        missing.append(f"{manager}:workers is {workers}")
    beating = [manager, *workers]
    missing += [f"no heartbeat of {name}" for name in beating if not client.exists(f"qw:hb:{name}")]
    return missing


def live(client: redis.Redis, manager: str) -> bool:
    """Whether ``manager`` is registered and beating, with every worker it lists beating."""
    return not not_live(client, manager)


def wait_both_live(client: redis.Redis, m1: ManagerProcess, m2: ManagerProcess, what: str) -> None:
    """Wait for both managers to be live; if they are not in time, fail saying what is
    missing, with both managers' output."""
    try:
        wait_for(lambda: live(client, "m1") and live(client, "m2"), what=what)
    except pytest.fail.Exception:
        missing = not_live(client, "m1") + not_live(client, "m2")
        pytest.fail(f"timed out waiting for {what}: {missing}\n{m1.output()}\n{m2.output()}")


# -- item 2: error replies do not kill the heartbeat ---------------------------------------


@pytest.mark.parametrize("fault", ["out of memory", "busy script"])
def test_an_error_reply_window_neither_stops_heartbeats_nor_reaps_live_workers(
    url: str, client: redis.Redis, record_dir: Path, fault: str
) -> None:
    job_ids = queue(url, [Job.new({"sleep": 0.1, "n": n}) for n in range(80)])
    m1, m2 = both_managers(url, record_dir)
    try:
        wait_both_live(client, m1, m2, "both managers")
        wait_for(lambda: len(runs(record_dir)) >= 4, what="some jobs to run")
        if fault == "out of memory":
            client.config_set("maxmemory", 1)  # noeviction: every write is refused with OOM
            hold(FAULT_SECONDS)
            client.config_set("maxmemory", 0)
        else:  # another client's script keeps Redis busy: everybody else gets BUSY
            client.eval(BUSY_SCRIPT, 0, FAULT_SECONDS)
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), timeout=30, what="every job")
        wait_both_live(client, m1, m2, "both managers beating again")
        logs = f"{m1.output()}\n{m2.output()}"
        assert records(record_dir, "reaped") == [], f"no live worker was taken for dead:\n{logs}"
        assert "Traceback" not in logs, "an error reply that passes is an outage, not an error"
        assert records(record_dir, "died") == []
        # The heartbeats go on: a manager killed now is noticed, and its jobs recovered.
        more = queue(url, [Job.new({"sleep": 0.5, "n": n}) for n in range(8)])
        wait_for(lambda: len(client.keys("m1.*:jobs")) == 2, what="m1's workers to hold jobs")
        held = {job_id for key in client.keys("m1.*:jobs") for job_id in client.lrange(key, 0, -1)}
        m1.signal_group(signal.SIGKILL)
        m1.wait()
        wait_for(lambda: set(runs(record_dir)) >= set(more), timeout=30, what="m2 to recover m1's jobs")
        wait_for(lambda: "m1" not in client.smembers("all:managers"), what="m1 to be forgotten")
        assert client.keys("m1.*:jobs") == []
        m2.signal(signal.SIGTERM)
        assert m2.wait() == 0, m2.output()
    finally:
        m1.close()
        m2.close()
    ran = runs(record_dir)
    assert all(ran[job_id] == 1 for job_id in job_ids), "nothing ran twice across the fault"
    assert {job_id for job_id in more if ran[job_id] != 1} <= held
    assert {row["worker"].split(".")[0] for row in records(record_dir, "reaped")} == {"m1"}
    assert set(assert_each_job_in_one_place(client, [*job_ids, *more]).values()) == {"finished"}


# -- items 3 and 4: hostile data and keys --------------------------------------------------


def test_unreadable_jobs_go_to_the_failed_registry_and_the_queue_moves_on(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    raw = redis.Redis.from_url(url)  # writes bytes as they are
    normal = [Job.new({"n": n}) for n in range(300)]
    broker = RedisBroker.from_url(url)
    try:
        for job in normal[:150]:
            broker.queue_job(job)
        raw.hset("job:bad-value", b"n", b"caf\xe9")  # Latin-1, not UTF-8
        raw.hset("job:bad-name", b"\xff\xfe", b"x")
        raw.set("job:not-a-hash", "hello")
        raw.lpush("all:jobs", "bad-value", "bad-name", "not-a-hash", "no-hash")
        raw.hset(b"job:id-\xff", b"n", b"1")  # a readable job whose id is not UTF-8
        raw.lpush("all:jobs", b"id-\xff")
        broker.queue_jobs(normal[150:])
    finally:
        broker.close()
    manager = start_manager(url, "bd")
    try:
        pids = worker_pids(manager)
        wait_for(lambda: len(runs(record_dir)) == 301, what="every readable job")
        wait_for(lambda: client.zcard("qw:failed") == 4, what="the unreadable jobs to fail")
        assert worker_pids(manager) == pids, "no worker died"
    finally:
        stop_manager(manager)
    assert records(record_dir, "died") == []
    assert all(count == 1 for count in runs(record_dir).values())
    broker = RedisBroker.from_url(url)
    try:
        failed = {entry.job.id: entry.failure for entry in broker.failed_jobs()}
    finally:
        broker.close()
    assert set(failed) == {"bad-value", "bad-name", "not-a-hash", "no-hash"}
    assert {failure.kind for failure in failed.values()} == {"invalid"}
    assert "the value of field n is not UTF-8 text: caf\\xe9" in failed["bad-value"].message
    assert "is a string, not a hash" in failed["not-a-hash"].message
    assert "has no data" in failed["no-hash"].message
    # The raw data is kept as it was, for a requeue once it is mended.
    assert raw.hgetall("qw:invalid:bad-value") == {b"n": b"caf\xe9"}
    assert raw.hgetall("qw:invalid:bad-name") == {b"\xff\xfe": b"x"}
    assert raw.get("qw:invalid:not-a-hash") == b"hello"
    assert not raw.exists(b"job:id-\xff"), "the job with a binary id ran and finished"
    where = assert_each_job_in_one_place(client, [job.id for job in normal])
    assert set(where.values()) == {"finished"}


def test_a_queue_key_of_the_wrong_type_is_reported_and_the_other_queues_are_served(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    client.set("wt:jobs", "another program's string")
    job_ids = queue(url, [Job.new({"n": n}) for n in range(50)])
    manager = ManagerProcess(url, "wt", record_dir=record_dir)
    try:
        wait_for(lambda: set(runs(record_dir)) == set(job_ids), what="the shared queue's jobs")
        broker = RedisBroker.from_url(url)
        try:
            problems = broker.problems()
            assert broker.queued_count("wt") == 0
        finally:
            broker.close()
        manager.signal(signal.SIGTERM)
        assert manager.wait() == 0, manager.output()
        output = manager.output()
    finally:
        manager.close()
    assert records(record_dir, "died") == []
    assert problems == [
        "wt:jobs is a string, not a list: no worker takes jobs from it "
        "(another program's key? rename or delete it)"
    ]
    assert "wt:jobs is a string, not a list" in output
    assert output.count("wt:jobs is a string") <= 2, "logged once a minute per worker, not per take"
    assert client.get("wt:jobs") == "another program's string", "left alone"
    assert set(assert_each_job_in_one_place(client, job_ids).values()) == {"finished"}


# -- item 5: an enqueue retried after a stall -----------------------------------------------


def test_an_enqueue_retried_after_a_stall_queues_the_job_once_with_its_data(
    server: PrivateRedis, url: str, client: redis.Redis
) -> None:
    options = RedisOptions(socket_timeout=0.3, block_slice=0.1, retries=3, backoff_cap=0.05)
    producer = RedisBroker.from_url(url, options)
    job = Job.new({"payload": "the data it was queued with"})
    client.script_load(script_source("queue.lua"))  # every attempt runs it (no NOSCRIPT round)
    client.config_resetstat()
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        sending = threading.Thread(target=producer.queue_job, args=(job,))
        sending.start()
        hold(0.8)  # past the socket timeout: redis-py gives up on the first attempt and re-sends
    finally:
        server.process.send_signal(signal.SIGCONT)
    sending.join(10)
    producer.close()
    stats = client.info("commandstats")["cmdstat_evalsha"]
    assert stats["calls"] >= 2, "the enqueue script ran more than once (else this tests nothing)"
    assert stats["failed_calls"] == 0
    assert client.lrange("all:jobs", 0, -1) == [job.id], "queued once"
    worker = RedisBroker.from_url(url)
    try:
        assert worker.take(manager="m", worker="m.1") == [job]
        assert worker.take(manager="m", worker="m.1", finished=[job.id]) == []
    finally:
        worker.close()
    assert assert_each_job_in_one_place(client, [job.id]) == {job.id: "finished"}


# -- item 6: the failed registry goes by the server's clock --------------------------------


def test_a_host_whose_clock_is_a_month_fast_does_not_empty_the_failed_registry(
    url: str, client: redis.Redis
) -> None:
    broker = RedisBroker.from_url(url)
    try:
        jobs = [Job.new({"n": n}) for n in range(101)]
        broker.queue_jobs(jobs)
        broker.take(manager="m", worker="m.1", limit=100)
        broker.take(manager="m", worker="m.1", limit=100, held=[job.id for job in jobs[:100]])
        for job in jobs[:100]:
            failure = Failure(exc_type="builtins.ValueError", message="bad")
            assert broker.fail_job(worker="m.1", job=job, failure=failure)
        fast = Failure(exc_type="builtins.ValueError", message="bad", failed_at=time.time() + 31 * 86400)
        assert broker.fail_job(worker="m.1", job=jobs[100], failure=fast, limits=FailedLimits())
        assert broker.failed_count() == 101
        seconds, _ = client.time()
        assert all(abs(entry.failure.failed_at - seconds) < 60 for entry in broker.failed_jobs(200))
    finally:
        broker.close()


@pytest.mark.parametrize("call", ["queue", "queue delayed", "requeue failed"])
def test_a_call_resent_after_its_reply_was_lost_changes_nothing(
    server: PrivateRedis, url: str, client: redis.Redis, call: str
) -> None:
    # Redis runs the call, the reply is lost, and before redis-py sends the call again the
    # job has run and finished (or failed again): the call re-sent must not queue it again.
    worker = RedisBroker.from_url(url)
    job = Job.new({"payload": "the data it was queued with"})
    if call == "requeue failed":
        worker.queue_job(job)
        worker.take(manager="m", worker="m.1")
        worker.fail_job(worker="m.1", job=job, failure=Failure(exc_type="E", message="first"))
    for name in ("queue.lua", "queue_delayed.lua", "requeue_failed.lua"):  # no NOSCRIPT round first
        client.script_load(script_source(name))
    with ReplyLosingProxy(server.port) as proxy:
        # Only the cut connection makes redis-py send the call again (no socket timeout).
        options = RedisOptions(backoff_cap=0.05, socket_timeout=60.0)
        producer = RedisBroker.from_url(f"redis://127.0.0.1:{proxy.port}/0", options)
        act = {
            "queue": lambda: producer.queue_job(job),
            "queue delayed": lambda: producer.queue_jobs([job], delay=0.2),
            "requeue failed": lambda: producer.requeue_failed(job.id),
        }[call]
        script = {"queue": "_queue", "queue delayed": "_queue_delayed", "requeue failed": "_requeue"}[call]
        proxy.lose_next(getattr(producer._scripts, script).sha.encode())
        sending = threading.Thread(target=act)
        sending.start()
        assert proxy.request_forwarded.wait(10)
        taken, _ = poll_take(worker, manager="m", worker="m.2", timeout=10, step=0.5)  # Redis ran it
        assert taken == [attrs.evolve(job, attempts=0)]
        if call == "requeue failed":
            worker.fail_job(worker="m.2", job=job, failure=Failure(exc_type="E", message="again"))
        else:
            worker.finish_jobs(worker="m.2", job_ids=[job.id])
        proxy.cut.set()
        sending.join(10)
        assert not sending.is_alive()
        assert proxy.sent_again >= 1, "the client sent the call again (else this tests nothing)"
        producer.close()
    worker.close()
    where = assert_each_job_in_one_place(client, [job.id])
    assert where == {job.id: "failed" if call == "requeue failed" else "finished"}


@pytest.mark.parametrize("how", ["promoted when due", "retried", "released", "recovered"])
def test_a_job_whose_queue_became_a_string_is_kept_in_the_failed_registry(
    url: str, client: redis.Redis, how: str
) -> None:
    # On its way back to its queue, a job finds the key is not a list: it is never dropped
    # (nor left half moved), but kept as a failed job, data and all, to requeue later.
    broker = RedisBroker.from_url(url)
    job = Job.new({"payload": "kept", "n": 7}, manager="bq", meta={"timeout": 30})
    try:
        if how == "promoted when due":
            broker.queue_jobs([job], delay=0.2)
        else:
            broker.queue_job(job)
            assert broker.take(manager="bq", worker="bq.1") == [job]
        client.set("bq:jobs", "another program's string")
        if how == "promoted when due":
            wait_for(lambda: broker._scripts.promote()[1] is None, what="the job to come due")
        elif how == "retried":
            assert broker.retry_job(worker="bq.1", job=job)
        elif how == "released":
            assert broker.release_jobs(worker="bq.1", job_ids=[job.id]) == 0
        else:
            assert broker.recover_worker(manager="bq", worker="bq.1") == 0
        entry = broker.get_failed(job.id)
        assert entry is not None
        assert entry.failure.kind == "invalid"
        assert "bq:jobs is a string, not a list" in entry.failure.message
        assert client.get("bq:jobs") == "another program's string", "left alone"
        assert assert_each_job_in_one_place(client, [job.id]) == {job.id: "failed"}
        client.delete("bq:jobs")  # mended: the job goes back, with the data it was queued with
        assert broker.requeue_failed(job.id)
        [again] = broker.take(manager="bq", worker="bq.2")
        assert again.data == {"payload": "kept", "n": 7}, "its data as queued, 7 a number still"
        assert (again.meta, again.queued_at) == (job.meta, job.queued_at), "and its metadata"
    finally:
        broker.close()


@pytest.mark.parametrize("key", ["qw:origin", "qw:recoveries", "qw:failed", "qw:due", "qw:delayed:all"])
def test_a_script_that_meets_a_qw_key_of_the_wrong_type_changes_nothing(
    url: str, client: redis.Redis, key: str
) -> None:
    broker = RedisBroker.from_url(url)
    job = Job.new({"n": 1})
    try:
        broker.queue_job(job)
        assert broker.take(manager="m", worker="m.1") == [job]
        before = {k: client.type(k) for k in client.keys("*")}
        client.delete(key)
        client.set(key, "not ours")
        failure = Failure(exc_type="E", message="m")
        settle = {
            "qw:due": lambda: broker.retry_job(worker="m.1", job=job, delay=60),
            "qw:delayed:all": lambda: broker.retry_job(worker="m.1", job=job, delay=60),
        }.get(key, lambda: broker.fail_job(worker="m.1", job=job, failure=failure))
        with pytest.raises(BackendError, match=f"WRONGTYPE {key} is a string"):
            settle()
        assert client.lrange("m.1:jobs", 0, -1) == [job.id], "still held, nothing half done"
        assert client.exists(f"job:{job.id}")
        assert any(key in problem for problem in broker.problems())
        client.delete(key)
        if key == "qw:origin":  # what the scripts keep there is gone with the key
            client.hset("qw:origin", job.id, "")
        assert broker.fail_job(worker="m.1", job=job, failure=Failure(exc_type="E", message="m"))
        ours = {k for k in before if k.startswith("qw:") and not k.startswith("qw:job:")}  # not the job's
        assert ours - {"qw:origin"} <= set(client.keys("*")) | {"qw:wake:all"}
    finally:
        broker.close()


def test_queueing_onto_a_queue_key_that_is_not_a_list_writes_nothing(url: str, client: redis.Redis) -> None:
    broker = RedisBroker.from_url(url)
    job = Job.new({"n": 1}, manager="ql")
    client.set("ql:jobs", "another program's string")
    try:
        with pytest.raises(BackendError, match="WRONGTYPE ql:jobs is a string"):
            broker.queue_job(job)
    finally:
        broker.close()
    assert not client.exists(f"job:{job.id}"), "no data left without its queue entry"


def test_queueing_for_a_manager_while_qw_queues_is_not_a_set_writes_nothing(
    url: str, client: redis.Redis
) -> None:
    broker = RedisBroker.from_url(url)
    job = Job.new({"n": 1}, manager="ql")
    client.set("qw:queues", "another program's string")
    try:
        with pytest.raises(BackendError, match="WRONGTYPE qw:queues is a string"):
            broker.queue_job(job)
        with pytest.raises(BackendError, match="WRONGTYPE qw:queues is a string"):
            broker.queue_jobs([job], delay=60)
        assert any("qw:queues" in problem for problem in broker.problems())
        assert broker.stray_queues() == {}, "status still answers"
        assert broker.queue_jobs([Job.new({"shared": True})]), "the shared queue does not need it"
    finally:
        broker.close()
    assert not client.exists(f"job:{job.id}"), "no data left without its queue entry"


def test_a_take_that_meets_qw_origin_of_the_wrong_type_moves_nothing(url: str, client: redis.Redis) -> None:
    broker = RedisBroker.from_url(url)
    job = Job.new({"n": 1})
    try:
        broker.queue_job(job)
        client.set("qw:origin", "not ours")
        with pytest.raises(BackendError, match="WRONGTYPE qw:origin is a string"):
            broker.take(manager="m", worker="m.1")
        assert client.lrange("all:jobs", 0, -1) == [job.id], "still queued, not half taken"
        client.delete("qw:origin")
        assert broker.take(manager="m", worker="m.1") == [job]
    finally:
        broker.close()
