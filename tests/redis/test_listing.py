"""Costs that grow with a backlog (issue 22): listings are read in bounded commands, a
listing's memory stays bounded, and the whole failed registry is requeued or purged in
server-side batches. Checked with Redis's MONITOR and with counts, never with a stopwatch
(the times are in ``bench/``)."""

from __future__ import annotations

import io
import json
import threading
import tracemalloc
from collections.abc import Callable, Iterator

import attrs
import pytest
import redis
from qwtest_proxy import ReplyLosingProxy
from redis_support import redis_url, shared_client, shared_port

from qw_cli.main import main
from qw_core.models import Failure, Job
from qw_redis import administering, codec, keys, listing
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions
from qw_redis.scripts import script_source

pytestmark = pytest.mark.redis

REDIS_DB = 8
#: The most ids one command of a listing may read (the broker's READ_CHUNK).
BOUND = 1000
#: Commands that read a range of a list or sorted set by index.
INDEX_RANGES = {"LRANGE", "ZRANGE", "ZREVRANGE"}


def invoke(*args: str) -> str:
    """Run ``qw ARGS`` in-process against this module's database; its stdout."""
    from click.testing import CliRunner

    result = CliRunner().invoke(main, [*args, "--url", redis_url(REDIS_DB)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result.stdout


class Monitor:
    """Every command Redis runs on this module's database (scripts' own commands too),
    from ``MONITOR`` on the server, until :meth:`stop`.

    The commands are read in a thread; :meth:`stop` sends a marker command and waits for
    the thread to see it, so every command sent before is in :attr:`commands`.
    """

    MARKER = "qwtest-monitor-stop"

    def __init__(self) -> None:
        self.commands: list[list[str]] = []  # each command's name and arguments
        self.scripted: list[bool] = []  # for each, whether a script ran it
        self._client = redis.Redis(port=shared_port(), db=REDIS_DB, decode_responses=True)
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            found = self._monitor.next_command()
            if self.MARKER in found["command"]:
                return
            if int(found["db"]) == REDIS_DB:
                self.commands.append(found["command"].split(" "))
                self.scripted.append(found["client_type"] == "lua")

    def stop(self) -> list[list[str]]:
        """Stop; every command seen."""
        self._client.echo(self.MARKER)
        self._thread.join(30)
        assert not self._thread.is_alive(), "MONITOR saw the marker"
        self._monitor.__exit__()
        self._client.close()
        return self.commands

    def sent(self) -> list[list[str]]:
        """The commands clients sent (not those scripts ran)."""
        return [
            command for command, scripted in zip(self.commands, self.scripted, strict=True) if not scripted
        ]


def unbounded(command: list[str]) -> str | None:
    """Why ``command`` may read more than :data:`BOUND` items at once, or ``None``."""
    name = command[0].upper()
    if name in INDEX_RANGES:
        start, stop = int(command[2]), int(command[3])
        if (start < 0) != (stop < 0):
            return "a range from one end to the other (0 -1): its length is the key's"
        if stop - start + 1 > BOUND:
            return f"{stop - start + 1} items"
    if name in {"ZRANGEBYSCORE", "ZREVRANGEBYSCORE"}:
        upper = [arg.upper() for arg in command]
        if "LIMIT" not in upper or int(command[upper.index("LIMIT") + 2]) > BOUND:
            return "no LIMIT, or a LIMIT over the bound"
    if name == "HMGET" and len(command) - 2 > BOUND:
        return f"{len(command) - 2} fields"
    if name in {"SMEMBERS", "HGETALL", "HKEYS", "HVALS", "KEYS"} and command[1] in {
        "qw:origin",
        "qw:failed",
    } | {"qw:due", "qw:delayed:all", "qw:delayed:m1"}:
        return "a whole registry"
    return None


@pytest.fixture
def backlog(real_client: redis.Redis, real_broker: RedisBroker) -> dict[str, list[str]]:
    """More than one command's worth of ids in every kind of listing, and a large registry:
    2,500 shared jobs, 1,200 for manager m1, 1,100 held by its worker m1.1 (sent to it
    directly), 2,300 delayed (for both queues) and 2,100 failed."""
    shared = [Job.new({"n": n}) for n in range(2500)]
    mine = [Job.new({"m": n}, manager="m1") for n in range(1200)]
    direct = [Job.new({"d": n}, worker="m1.1") for n in range(1100)]
    later = [Job.new({"l": n}, manager="m1" if n % 2 else None) for n in range(2300)]
    doomed = [Job.new({"f": n}, manager="m2") for n in range(2100)]
    real_broker.register_manager("m1")
    real_broker.register_worker(manager="m1", worker="m1.1")
    real_broker.queue_jobs([*doomed, *shared, *mine, *direct])
    real_broker.queue_jobs(later, delay=3600)
    taken: list[Job] = []
    while len(taken) < len(doomed):
        taken += real_broker.take(manager="m2", worker="m2.1", held=[j.id for j in taken], limit=100)
    for job in taken:
        real_broker.fail_job(worker="m2.1", job=job, failure=Failure(exc_type="E", message="no"))
    # The test may read them all at once.
    delayed_shared = [str(i) for i in real_client.zrange("qw:delayed:all", 0, -1)]
    delayed_mine = [str(i) for i in real_client.zrange("qw:delayed:m1", 0, -1)]
    return {
        "shared": [job.id for job in shared],
        "m1": [job.id for job in mine],
        "held": real_client.lrange("m1.1:jobs", 0, -1),
        "delayed shared": delayed_shared,
        "delayed m1": delayed_mine,
        "failed": [job.id for job in taken],
    }


def test_listings_read_in_bounded_commands_and_list_everything(
    real_broker: RedisBroker, backlog: dict[str, list[str]]
) -> None:
    monitor = Monitor()
    assert real_broker.queued_job_ids() == backlog["shared"]
    assert real_broker.queued_job_ids("m1") == backlog["m1"]
    assert real_broker.held_job_ids("m1.1") == backlog["held"]
    assert real_broker.delayed_job_ids() == backlog["delayed shared"]
    assert real_broker.delayed_job_ids("m1", offset=1000, limit=5) == backlog["delayed m1"][1000:1005]
    assert real_broker.delayed_count("m1") == len(backlog["delayed m1"])
    assert real_broker.queued_job_ids(offset=1999, limit=1001) == backlog["shared"][1999:]
    assert [e.job.id for e in real_broker.failed_jobs(limit=3000)] == backlog["failed"][::-1]
    commands = monitor.stop()
    assert [(c, why) for c in commands if (why := unbounded(c))] == []
    assert sum(c[0].upper() == "LRANGE" for c in commands) >= 3 + 3 + 2, "long lists in several reads"


def test_qw_jobs_and_status_read_in_bounded_commands(
    real_broker: RedisBroker, backlog: dict[str, list[str]]
) -> None:
    monitor = Monitor()
    listed = json.loads(invoke("jobs", "--all", "--json"))
    first = invoke("jobs").splitlines()
    deep = invoke("jobs", "--offset", "6000", "--limit", "3").splitlines()
    invoke("status")
    commands = monitor.stop()
    assert [(c, why) for c in commands if (why := unbounded(c))] == []
    expected = (
        [(i, "queued", None, None) for i in backlog["shared"]]
        + [(i, "delayed", None, None) for i in backlog["delayed shared"]]
        + [(i, "queued", "m1", None) for i in backlog["m1"]]
        + [(i, "delayed", "m1", None) for i in backlog["delayed m1"]]
        + [(i, "held", "m1", "m1.1") for i in backlog["held"]]
    )
    assert [(r["id"], r["state"], r["manager"], r["worker"]) for r in listed] == expected
    assert [row.split()[-1] for row in first[1:]] == backlog["shared"][:100]
    # The columns: state, queue ("-": none of these is on a named queue), manager, worker, id.
    assert [row.split() for row in deep[1:]] == [
        [state, "-", manager or "-", worker or "-", job_id]
        for job_id, state, manager, worker in expected[6000:6003]
    ]


def test_qw_failed_requeue_and_purge_all_work_in_bounded_batches(
    real_client: redis.Redis, real_broker: RedisBroker, backlog: dict[str, list[str]]
) -> None:
    for name in ("requeue_failed_batch.lua", "purge_failed_upto.lua"):  # no NOSCRIPT round first
        real_client.script_load(script_source(name))
    monitor = Monitor()
    requeued = invoke("failed", "requeue", "--all").split()
    commands = monitor.stop()
    assert [(c, why) for c in commands if (why := unbounded(c))] == []
    assert requeued == backlog["failed"], "each id printed once, the oldest failure first"
    assert real_client.lrange("m2:jobs", 0, -1)[::-1] == backlog["failed"]
    calls = [c for c in commands if c[0].upper() == "EVALSHA"]
    assert len(calls) == -(-len(backlog["failed"]) // administering.REQUEUE_BATCH)
    hgets = [c for c in monitor.sent() if c[0].upper() == "HGET" and c[1].startswith("qw:failed:")]
    assert len(hgets) == len(backlog["failed"]), "each record read once"

    taken: list[Job] = []
    while len(taken) < len(requeued):
        taken += real_broker.take(manager="m2", worker="m2.2", held=[j.id for j in taken], limit=100)
    for job in taken:
        real_broker.fail_job(worker="m2.2", job=job, failure=Failure(exc_type="E", message="again"))
    monitor = Monitor()
    invoke("failed", "purge", "--all")
    commands = monitor.stop()
    assert [(c, why) for c in commands if (why := unbounded(c))] == []
    assert real_broker.failed_count() == 0
    assert not real_client.keys("qw:failed:*")
    calls = [c for c in commands if c[0].upper() == "EVALSHA"]
    assert len(calls) == len(requeued) // administering.PURGE_BATCH + 1


class Sink(io.TextIOBase):
    """A stdout that keeps only a count of the lines written to it."""

    encoding = "utf-8"

    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)

    def writable(self) -> bool:
        return True


def peak_while(run: Callable[[], None]) -> int:
    """The most memory Python held at once (tracemalloc) while ``run`` ran, in bytes."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("as_json", [False, True])
def test_listing_a_large_queue_keeps_memory_bounded(
    real_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    count = 100_000
    for start in range(0, count, 10_000):  # ids alone: what qw jobs reads
        real_client.lpush(
            "all:jobs", *(f"{n:08d}-0000-4000-8000-000000000000" for n in range(start, start + 10_000))
        )
    sink = Sink()
    monkeypatch.setattr("sys.stdout", sink)
    args = ["jobs", "--all", *(["--json"] if as_json else []), "--url", redis_url(REDIS_DB)]
    main.main(["jobs", "--limit", "1", "--url", redis_url(REDIS_DB)], standalone_mode=False)  # imports
    sink.lines = 0
    peak = peak_while(lambda: main.main(args, standalone_mode=False))
    assert sink.lines == (count * 7 + 2 if as_json else count + 1), "everything was listed"
    # Listing everything at once held 56 MB here (105 MB with --json); page by page, under 1 MB.
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MB held at once"


# -- the whole failed registry -------------------------------------------------------------


def failed(broker: RedisBroker, jobs: list[Job], *, worker: str = "m1.1") -> list[Job]:
    """Queue ``jobs`` (for ``worker``'s manager or everybody), take and fail them in order."""
    broker.queue_jobs(jobs)
    taken: list[Job] = []
    manager = worker.rsplit(".", 1)[0]
    while len(taken) < len(jobs):
        batch = broker.take(manager=manager, worker=worker, held=[j.id for j in taken], limit=100)
        assert batch, "every job queued is taken"
        taken += batch
    by_id = {job.id: job for job in taken}
    for job in jobs:
        assert broker.fail_job(worker=worker, job=by_id[job.id], failure=Failure(exc_type="E", message="no"))
    return [by_id[job.id] for job in jobs]


def test_requeue_all_failed_walks_failures_of_the_same_time_once_each(
    real_client: redis.Redis, real_broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Failures stamped in the same microsecond (parked by one script, say) tie on their
    # score: Redis sorts them by id, and the walk must neither repeat nor miss one,
    # whatever the batch size, even when some of them cannot be requeued.
    monkeypatch.setattr(administering, "REQUEUE_BATCH", 3)
    jobs = failed(real_broker, [Job.new({"n": n}) for n in range(11)])
    real_client.zadd("qw:failed", {job.id: 1000.0 for job in jobs[:8]}, xx=True)
    blocked = sorted(job.id for job in jobs[:8])[2::3]  # spread over the tie
    real_broker.queue_jobs([Job(id=job_id, data={"live": True}) for job_id in blocked])
    reported: list[str] = []
    assert real_broker.requeue_all_failed(progress=reported.extend) == 11 - len(blocked)
    assert sorted(reported) == sorted({job.id for job in jobs} - set(blocked))
    assert sorted(real_client.zrange("qw:failed", 0, -1)) == sorted(blocked)


def test_requeue_all_failed_passes_over_what_it_cannot_requeue_and_requeues_the_rest(
    real_client: redis.Redis, real_broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(administering, "REQUEUE_BATCH", 2)
    [unreadable] = failed(real_broker, [Job.new({"n": 1})])
    [for_bq] = failed(real_broker, [Job.new({"n": 2}, manager="bq")], worker="bq.1")
    fine, roomy = failed(real_broker, [Job.new({"n": 3}), Job.new({"n": 4})])
    real_client.hset(f"qw:failed:{unreadable.id}", "job", "{not json")
    real_client.set("bq:jobs", "another program's string")
    assert real_broker.requeue_all_failed() == 2
    assert real_client.lrange("all:jobs", 0, -1)[::-1] == [fine.id, roomy.id]
    assert sorted(real_client.zrange("qw:failed", 0, -1)) == sorted([unreadable.id, for_bq.id])
    assert real_client.hget(f"qw:failed:{for_bq.id}", "origin") == "bq", "kept whole"
    assert real_client.get("bq:jobs") == "another program's string", "left alone"


def test_requeue_all_failed_restores_a_job_kept_as_it_was(
    real_client: redis.Redis, real_broker: RedisBroker
) -> None:
    small = RedisBroker(shared_client(REDIS_DB), RedisOptions(max_job_size=1000))
    real_client.hset("job:big", mapping={"blob": "x" * 2000, "n": "7"})
    real_client.lpush("m1:jobs", "big")
    assert small.take(manager="m1", worker="m1.1") == []
    assert real_client.exists("qw:invalid:big")
    assert real_broker.requeue_all_failed() == 1
    assert real_client.hgetall("job:big") == {"blob": "x" * 2000, "n": "7"}, "the hash as it was"
    assert real_client.lrange("m1:jobs", 0, -1) == ["big"]
    assert not real_client.exists("qw:invalid:big", "qw:failed:big")


def test_purge_all_failed_keeps_what_fails_while_it_runs(
    real_broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(administering, "PURGE_BATCH", 2)
    failed(real_broker, [Job.new({"n": n}) for n in range(5)])
    real_broker.queue_jobs([Job.new({"late": True})])
    [late] = real_broker.take(manager="m1", worker="m1.2")
    counts: list[int] = []

    def fail_one_more(count: int) -> None:
        if not counts:
            real_broker.fail_job(worker="m1.2", job=late, failure=Failure(exc_type="E", message="late"))
        counts.append(count)

    assert real_broker.purge_all_failed(progress=fail_one_more) == 5
    assert counts == [2, 2, 1]
    assert [entry.job.id for entry in real_broker.failed_jobs()] == [late.id]


@pytest.fixture
def lossy(real_client: redis.Redis) -> Iterator[tuple[ReplyLosingProxy, RedisBroker]]:
    """A broker whose next script call's reply a proxy loses (redis-py then sends it again)."""
    for name in ("requeue_failed_batch.lua", "purge_failed_upto.lua"):  # no NOSCRIPT round first
        real_client.script_load(script_source(name))
    with ReplyLosingProxy(shared_port()) as proxy:
        options = RedisOptions(backoff_cap=0.05, socket_timeout=60.0)
        producer = RedisBroker.from_url(f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}", options)
        yield proxy, producer
        producer.close()


def test_a_requeue_batch_passes_over_a_job_that_failed_again_after_its_record_was_read(
    real_client: redis.Redis, real_broker: RedisBroker
) -> None:
    [job] = failed(real_broker, [Job.new({"n": 1})])
    score = float(real_client.zscore(keys.FAILED, job.id))
    stored = codec.encode_job(attrs.evolve(job, attempts=0), max_size=0)
    # Between the read and the batch, someone requeued it, and it ran and failed again.
    assert real_broker.requeue_failed(job.id)
    [again] = real_broker.take(manager="m1", worker="m1.2")
    assert real_broker.fail_job(worker="m1.2", job=again, failure=Failure(exc_type="E", message="again"))
    assert float(real_client.zscore(keys.FAILED, job.id)) != score
    assert real_broker._scripts.requeue_failed_batch([(job.id, score, stored, None)]) == []
    assert [entry.failure.message for entry in real_broker.failed_jobs()] == ["again"], "left as it is"
    assert real_client.llen("all:jobs") == 0


@pytest.mark.parametrize("call", ["requeue", "purge"])
def test_a_batch_resent_after_its_reply_was_lost_changes_nothing_and_counts_once(
    real_client: redis.Redis,
    real_broker: RedisBroker,
    lossy: tuple[ReplyLosingProxy, RedisBroker],
    call: str,
) -> None:
    # Redis runs the batch, the reply is lost, and before redis-py sends it again the job
    # has been requeued, run and failed again: the call re-sent must not requeue (or
    # purge) it again, and must answer what the first call did.
    proxy, producer = lossy
    [job] = failed(real_broker, [Job.new({"n": 1})])
    script = producer._scripts._requeue_batch if call == "requeue" else producer._scripts._purge_upto
    proxy.lose_next(script.sha.encode())
    result: list[int] = []
    act = producer.requeue_all_failed if call == "requeue" else producer.purge_all_failed
    sending = threading.Thread(target=lambda: result.append(act()))
    sending.start()
    assert proxy.request_forwarded.wait(10)
    if call == "requeue":  # Redis ran it: the job is back, and fails again
        [again] = real_broker.take(manager="m1", worker="m1.2")
        assert again == attrs.evolve(job, attempts=0)
    else:
        assert real_broker.failed_count() == 0
        [again] = failed(real_broker, [Job.new({"n": 2})], worker="m1.2")
    if call == "requeue":
        assert real_broker.fail_job(worker="m1.2", job=again, failure=Failure(exc_type="E", message="again"))
    proxy.cut.set()
    sending.join(10)
    assert not sending.is_alive()
    assert proxy.sent_again >= 1, "the client sent the call again (else this tests nothing)"
    assert result == [1], "the first call's answer"
    assert [entry.job.id for entry in real_broker.failed_jobs()] == [again.id]
    assert real_client.llen("all:jobs") == 0


def test_failed_jobs_reads_a_long_registry_in_bounded_commands(
    real_broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "READ_CHUNK", 2)
    jobs = failed(real_broker, [Job.new({"n": n}) for n in range(5)])
    monitor = Monitor()
    assert [entry.job.id for entry in real_broker.failed_jobs(limit=4)] == [j.id for j in jobs[::-1][:4]]
    ranges = [c[2:4] for c in monitor.stop() if c[0].upper() == "ZREVRANGE"]
    assert ranges == [["0", "1"], ["2", "3"]]
