"""The original qw 0.1.1 API (Client, Manager, Worker) on a real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from qwtest_docs import docs_block
from qwtest_proxy import ReplyLosingProxy
from qwtest_redis import PrivateRedis
from qwtest_wait import wait_for
from redis_support import REDIS_HOST, redis_url, shared_port

from qw_redis import Client, Manager, RedisBroker, Worker
from qw_redis.scripts import script_source

REDIS_DB = 13


@pytest.fixture
def client(real_client: redis.Redis, redis_db: int) -> Iterator[Client]:
    client = Client(host=REDIS_HOST, port=shared_port(), db=redis_db)
    yield client
    client.close()


def test_client_is_a_decoding_strict_redis(client: Client) -> None:
    assert isinstance(client, redis.StrictRedis)
    client.set("k", "v")
    assert client.get("k") == "v"


def test_membership(client: Client) -> None:
    client.register_manager("m1")
    client.register_manager("m2")
    client.register_worker("m1", "m1.1")
    client.register_worker("m1", "m1.2")
    assert client.get_all_managers() == {"m1", "m2"}
    assert client.get_manager_workers("m1") == {"m1.1", "m1.2"}
    client.deregister_worker("m1", "m1.2")
    client.deregister_manager("m2")
    assert client.get_all_managers() == {"m1"}
    assert client.get_manager_workers("m1") == {"m1.1"}
    assert client.smembers("all:managers") == {"m1"}


def test_fetch_keeps_the_job_on_the_worker_list_until_finished(client: Client) -> None:
    job_id = client.queue_job({"n": 7, "name": "x"})
    assert client.lrange("all:jobs", 0, -1) == [job_id]
    assert client.fetch_next_job("m1", "m1.1", timeout=1) == (job_id, {"n": 7, "name": "x"})
    assert client.get_worker_pending_jobs("m1.1") == [job_id]
    assert client.exists(f"job:{job_id}")
    # Fetched and not finished: not handed out again by this client.
    assert client.fetch_next_job("m1", "m1.1", timeout=0) is None
    client.finish_job(job_id, "m1.1")
    assert client.get_worker_pending_jobs("m1.1") == []
    assert not client.exists(f"job:{job_id}")


def test_a_restarted_client_gets_the_unfinished_job_back(client: Client, redis_db: int) -> None:
    job_id = client.queue_job({"n": 1}, manager="m1")
    assert client.fetch_next_job("m1", "m1.1", timeout=1) == (job_id, {"n": 1})
    again = Client(host=REDIS_HOST, port=shared_port(), db=redis_db)
    assert again.fetch_next_job("m1", "m1.1", timeout=0) == (job_id, {"n": 1})
    again.finish_job(job_id, "m1.1")
    again.close()
    # A token nobody needed, and the producer's last call (both expire or are cleared),
    # and the name m1 among those jobs were queued to (where qw status looks for strays).
    assert set(client.keys("*")) - set(client.keys("qw:producer:*")) <= {"qw:wake:m1", "qw:queues"}
    assert client.smembers("qw:queues") == {"m1"}


def test_fetch_waits_up_to_its_timeout(client: Client) -> None:
    started = time.monotonic()
    assert client.fetch_next_job("m1", "m1.1", timeout=0.3) is None
    assert 0.25 < time.monotonic() - started < 5, "waited its timeout, and not the original's 10 s"


def test_queue_for_a_manager_or_a_worker(client: Client) -> None:
    for_manager = client.queue_job({"a": 1}, manager="m1")
    for_worker = client.queue_job([1, 2], worker="m1.1")
    assert client.get_manager_queued_jobs("m1") == [for_manager]
    assert client.get_worker_pending_jobs("m1.1") == [for_worker]
    assert client.fetch_next_job("m1", "m1.1", timeout=0) == (for_worker, [1, 2])
    assert client.fetch_next_job("m1", "m1.1", timeout=0) == (for_manager, {"a": 1})


def test_listings_of_all_queued_and_pending_jobs(client: Client) -> None:
    client.register_manager("m1")
    client.register_manager("m2")
    client.register_worker("m1", "m1.1")
    shared = [client.queue_job({"n": n}) for n in range(2)]
    mine = client.queue_job({"n": 9}, manager="m2")
    assert list(client.get_all_queued_jobs()) == [(None, shared[1]), (None, shared[0]), ("m2", mine)]
    taken, _ = client.fetch_next_job("m1", "m1.1", timeout=0) or ("", None)
    assert taken == shared[0]
    assert list(client.get_all_pending_jobs()) == [("m1.1", taken)]


def test_a_queue_call_sent_again_while_another_thread_queued_runs_its_job_once(
    client: Client, real_client: redis.Redis, redis_db: int
) -> None:
    # A Client is a redis-py client, which threads share. One thread's queue_job reaches
    # Redis but its reply is lost; meanwhile another thread queues a job through the same
    # Client, and a worker runs and finishes both. redis-py then sends the first call
    # again: it must not queue the finished job a second time.
    real_client.script_load(script_source("queue.lua"))  # no NOSCRIPT round first
    worker = RedisBroker.from_url(redis_url(redis_db))
    with ReplyLosingProxy(shared_port()) as proxy:
        shared = Client(host=REDIS_HOST, port=proxy.port, db=redis_db)
        try:
            shared.ping()
            proxy.lose_next(b"lost-reply")
            sending = threading.Thread(target=shared.queue_job, args=({"n": "lost-reply"},))
            sending.start()
            assert proxy.request_forwarded.wait(10)
            shared.queue_job({"n": "meanwhile"})
            taken = worker.take(manager="m1", worker="m1.1", limit=2)
            assert sorted((job.data for job in taken), key=str) == [{"n": "lost-reply"}, {"n": "meanwhile"}]
            worker.finish_jobs(worker="m1.1", job_ids=[job.id for job in taken])
            proxy.cut.set()
            sending.join(15)
            assert not sending.is_alive()
            assert proxy.sent_again >= 1, "the client sent the call again (else this tests nothing)"
        finally:
            shared.close()
            worker.close()
    assert real_client.lrange("all:jobs", 0, -1) == [], "the finished job is not queued again"
    assert real_client.keys("job:*") == []


# -- Manager and Worker processes --------------------------------------------------------

DONE = "compat-test:done"


def record(job_id: str, job_data: Any) -> None:
    """A target: note the job in Redis (it runs in a worker process)."""
    with redis.Redis(host=REDIS_HOST, port=shared_port(), db=REDIS_DB) as conn:
        conn.sadd(DONE, job_id)


def test_manager_runs_workers_that_process_jobs(client: Client, redis_db: int) -> None:
    manager = Manager(record, host=REDIS_HOST, port=shared_port(), db=redis_db, num_workers=2, name="compat")
    assert (manager.name, manager.num_workers) == ("compat", 2)
    manager.start()
    try:
        ids = [client.queue_job({"n": n}) for n in range(5)] + [client.queue_job({"m": 1}, manager="compat")]
        wait_for(lambda: client.scard(DONE) == 6)
        assert client.smembers(DONE) == set(ids)
        assert client.get_all_managers() == {"compat"}
        wait_for(lambda: len(client.get_manager_workers("compat")) == 2)  # one may have done all
    finally:
        manager.stop()
        assert manager.join(10)
    assert client.get_all_managers() == set()
    assert client.keys("job:*") == []


def test_worker_process_runs_until_shutdown(client: Client) -> None:
    worker = Worker(client, record, manager_name="cw", timeout=10)
    worker.start()
    try:
        job_id = client.queue_job({"n": 1}, manager="cw")
        wait_for(lambda: client.sismember(DONE, job_id))
        assert client.get_manager_workers("cw") == {f"cw.{worker.pid}"}
    finally:
        started = time.monotonic()
        worker.shutdown()
        worker.join(10)
    assert worker.exitcode == 0
    assert time.monotonic() - started < 9, "noticed the shutdown long before its 10 s fetch timeout"
    assert client.get_manager_workers("cw") == set()
    wait_for(lambda: not client.exists(f"job:{job_id}"), timeout=10)


#: The original qw's "Basic usage", as the documentation shows it (its import line changed).
BASIC_USAGE = docs_block("how-to/original-api.md", "# basic_usage.py")


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``signum`` (Linux's /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        caught = next(line for line in fh if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signum - 1) & 1)


@pytest.fixture
def default_address() -> Iterator[Client]:
    """A Redis at the original defaults, localhost:6379 db 0: a private one started there,
    or, if one runs there already (CI starts one), that one, provided it holds no qw state
    this test could disturb or be disturbed by."""
    import socket

    private = None
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        private = PrivateRedis(port=6379)
    client = Client()  # the example's own defaults: localhost, 6379, db 0
    host = socket.gethostname()
    busy = client.exists("all:jobs", f"{host}:jobs", f"{host}:workers") or host in client.get_all_managers()
    if busy:
        client.close()
        pytest.fail(
            f"the Redis at localhost:6379 holds qw jobs or a manager named {host!r} in db 0; this test "
            "runs the original example against those defaults and would take them: run it where that "
            "database holds no qw state",
            pytrace=False,
        )
    try:
        yield client
    finally:
        client.close()
        if private is not None:
            private.stop()


def test_the_original_basic_usage_runs_with_only_its_import_changed(
    tmp_path: Any, default_address: Client
) -> None:
    """The original README's script (Python 3 prints), on its default localhost:6379/0.

    Db 0 may be shared, so this test writes only its own job and leaves nothing behind.
    """
    import signal
    import socket
    import subprocess
    import sys

    script = tmp_path / "basic_usage.py"
    script.write_text(BASIC_USAGE, encoding="utf-8")
    default = default_address
    manager = socket.gethostname()
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: manager in default.get_all_managers())
        job_id = default.queue_job({"hello": "basic usage"}, manager=manager)
        wait_for(lambda: not default.exists(f"job:{job_id}") and not default.llen(f"{manager}:jobs"))
        wait_for(lambda: catches(proc.pid, signal.SIGTERM), what="the script to be in join()")
        proc.terminate()  # SIGTERM: the script's join() stops the manager cleanly
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"{job_id}\n{{'hello': 'basic usage'}}\n" in out
    assert manager not in default.get_all_managers()
    assert default.smembers(f"{manager}:workers") == set()
