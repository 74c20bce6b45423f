"""Unique jobs on PostgreSQL beyond the contract: producers racing on one key with their
own connections, producers inside open transactions (the other waits, then sees the
committed job or a key freed by the rollback), transactional enqueue with a key, and the
sweep of keys nobody holds."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from qwtest_postgres import SERVER_URL

import qw_postgres
from qw_core.errors import ConfigurationError
from qw_core.models import Job
from qw_core.testing import MANAGER, WORKER
from qw_core.unique import Queued, Unique
from qw_postgres import uniques
from qw_postgres.broker import PostgresBroker

KEY = "sync-user-42"
RACERS = 8


def _rows(schema: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        return conn.execute(query.replace("{s}", schema)).fetchall()


def _race(
    url: str,
    call: Callable[[PostgresBroker, Job], Queued],
    rounds: int = 1,
    after: Callable[[PostgresBroker, Queued], None] | None = None,
) -> list[list[Queued]]:
    """``RACERS`` threads, each with a broker (a connection) of its own, make ``call``
    with a job of their own at once, ``rounds`` times, and ``after`` once all of them
    answered; what each got, per round."""
    brokers = [PostgresBroker.from_url(url) for _ in range(RACERS)]
    barrier = threading.Barrier(RACERS)

    def racer(broker: PostgresBroker) -> list[Queued]:
        got = []
        for n in range(rounds):
            job = Job.new({"round": n})
            barrier.wait(timeout=30)
            got.append(call(broker, job))
            barrier.wait(timeout=30)
            if after is not None:
                after(broker, got[-1])
        return got

    try:
        with ThreadPoolExecutor(RACERS) as pool:
            per_racer = list(pool.map(racer, brokers))
    finally:
        for broker in brokers:
            broker.close()
    return [list(answers) for answers in zip(*per_racer, strict=True)]


@pytest.mark.parametrize("unique", [Unique(KEY), Unique(KEY, until="start"), Unique(KEY, ttl=3600)])
def test_of_producers_racing_on_a_new_key_exactly_one_queues_and_all_get_its_id(
    pg_url: str, pg_schema: str, unique: Unique
) -> None:
    [answers] = _race(pg_url, lambda broker, job: broker.queue_job_unique(job, unique))
    created = [queued for queued in answers if queued.created]
    assert len(created) == 1, answers
    assert {queued.id for queued in answers} == {created[0].id}
    assert _rows(pg_schema, "SELECT id FROM {s}.jobs") == [(created[0].id,)]


def test_producers_racing_on_a_key_whose_holder_ended_queue_one_job_each_time(
    pg_url: str, pg_schema: str
) -> None:
    """The key's row is there (its job finished): the racers update it, not insert it."""
    rounds = 5

    def end(broker: PostgresBroker, queued: Queued) -> None:
        if queued.created:  # the winner ends its job before the next round
            [taken] = broker.take(manager=MANAGER, worker=WORKER)
            assert broker.finish_jobs(worker=WORKER, job_ids=[taken.id]) == [True]

    per_round = _race(pg_url, lambda broker, job: broker.queue_job_unique(job, KEY), rounds, end)
    winners = []
    for answers in per_round:
        created = [queued for queued in answers if queued.created]
        assert len(created) == 1, answers
        winner = created[0].id
        assert all(queued.id == winner for queued in answers), answers
        winners.append(winner)
    assert len(set(winners)) == rounds
    assert _rows(pg_schema, "SELECT job_id FROM {s}.uniques") == [(winners[-1],)]


def _waiting_on_a_lock(schema: str) -> bool:
    rows = _rows(
        schema,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE '%{s}.claim_uniques%'",
    )
    return bool(rows[0][0])


def _wait_until_blocked(schema: str, future: Future[Any]) -> None:
    deadline = time.monotonic() + 10
    while not _waiting_on_a_lock(schema):
        assert not future.done(), f"the second producer did not wait: {future.result()}"
        assert time.monotonic() < deadline, "the second producer never waited on the key"
        time.sleep(0.01)


@pytest.mark.parametrize("stale", [False, True], ids=["new key", "key of an ended job"])
@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_a_producer_waits_for_an_open_transaction_that_took_the_key(
    pg_url: str, pg_schema: str, stale: bool, commit: bool
) -> None:
    with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker, ThreadPoolExecutor(1) as pool:
        if stale:
            broker.queue_job(Job.new({"n": 0}), unique=KEY)
            [taken] = broker.take(manager=MANAGER, worker=WORKER)
            broker.finish_jobs(worker=WORKER, job_ids=[taken.id])
        mine, theirs = Job.new({"n": 1}), Job.new({"n": 2})
        with psycopg.connect(SERVER_URL) as conn:  # not autocommit: a transaction is open
            assert qw_postgres.enqueue(conn, mine, schema=pg_schema, unique=KEY) == [mine.id]

            def other() -> Queued:
                with contextlib.closing(PostgresBroker.from_url(pg_url)) as producer:
                    return producer.queue_job_unique(theirs, KEY)

            future = pool.submit(other)
            _wait_until_blocked(pg_schema, future)
            if commit:
                conn.commit()
            else:
                conn.rollback()
            answer = future.result(timeout=30)
        if commit:
            assert answer == Queued(mine.id, False), "it sees the committed job holding the key"
            assert broker.queued_job_ids() == [mine.id]
        else:
            assert answer == Queued(theirs.id, True), "the rollback freed the key"
            assert broker.queued_job_ids() == [theirs.id]


def test_two_open_transactions_on_one_key_queue_one_job(pg_url: str, pg_schema: str) -> None:
    PostgresBroker.from_url(pg_url).close()  # creates the schema
    first, second = Job.new({"n": 1}), Job.new({"n": 2})
    one, two = psycopg.connect(SERVER_URL), psycopg.connect(SERVER_URL)
    with one, two, ThreadPoolExecutor(1) as pool:
        assert qw_postgres.enqueue(one, first, schema=pg_schema, unique=KEY) == [first.id]
        future = pool.submit(qw_postgres.enqueue, two, second, schema=pg_schema, unique=KEY)
        _wait_until_blocked(pg_schema, future)
        one.commit()
        assert future.result(timeout=30) == [first.id]
        two.commit()
    assert _rows(pg_schema, "SELECT id FROM {s}.jobs") == [(first.id,)]


def test_transactional_enqueue_with_a_key(pg_url: str, pg_schema: str) -> None:
    with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker:
        held = Job.new({"n": 0})
        with psycopg.connect(SERVER_URL) as conn:
            jobs = [held, Job.new({"n": 1})]
            assert qw_postgres.enqueue(conn, jobs, schema=pg_schema, unique=Unique(KEY, until="start")) == [
                held.id,
                held.id,
            ], "of two jobs with one key, one is queued"
            assert broker.queued_job_ids() == [], "invisible before the commit"
        assert broker.queued_job_ids() == [held.id]
        stored = broker.get_job(held.id)
        assert stored is not None
        assert stored.meta["unique"] == {"key": KEY, "until": "start"}
        with psycopg.connect(SERVER_URL) as conn:
            assert qw_postgres.enqueue(conn, Job.new({"n": 2}), schema=pg_schema, unique=KEY) == [held.id]
            other = Job.new({"n": 3})
            assert broker.queue_jobs_unique([other], connection=conn) == [Queued(other.id, True)]
            conn.rollback()
        assert broker.queued_job_ids() == [held.id], "the rollback left nothing"
        with pytest.raises(ConfigurationError, match="NUL"):
            broker.queue_job(Job.new({}), unique="a\x00b")


def test_a_key_longer_than_postgresql_can_index_is_refused_in_one_line(pg_broker: PostgresBroker) -> None:
    """A key may have 1,000 characters, but 1,000 emoji are 4,000 bytes, more than an
    entry of the keys' index holds: it is refused before anything is written, with the
    limit named (it failed in the database, as "does not answer", an outage to retry)."""
    rng = random.Random(42)  # no repeats: PostgreSQL cannot compress the entry under its limit
    emoji = "".join(chr(rng.randrange(0x10000, 0x20000)) for _ in range(1000))
    with pytest.raises(ConfigurationError, match="at most 2000 bytes in UTF-8 on PostgreSQL, not 4000"):
        pg_broker.queue_job(Job.new({}), unique=emoji)
    assert pg_broker.queued_job_ids() == []
    fits = emoji[:500]  # 2,000 bytes
    first = pg_broker.queue_job_unique(Job.new({}), fits)
    assert first.created
    assert pg_broker.queue_job_unique(Job.new({}), fits) == Queued(first.id, False)


def test_the_reaper_sweeps_keys_nobody_holds_and_keeps_the_others(pg_url: str, pg_schema: str) -> None:
    with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker:
        ended, waiting, throttled = Job.new({"n": 1}), Job.new({"n": 2}), Job.new({"n": 3})
        broker.queue_job(ended, unique="ended")
        broker.queue_job(waiting, unique="waiting")
        broker.queue_job(throttled, unique=Unique("throttled", ttl=3600))
        [taken] = broker.take(manager=MANAGER, worker=WORKER)
        assert taken.id == ended.id
        broker.finish_jobs(worker=WORKER, job_ids=[ended.id])
        [taken] = broker.take(manager=MANAGER, worker=WORKER, held=[ended.id], limit=1)
        assert taken.id == waiting.id
        broker.finish_jobs(worker=WORKER, job_ids=[waiting.id])
        broker.take(manager=MANAGER, worker=WORKER)
        broker.finish_jobs(worker=WORKER, job_ids=[throttled.id])
        before = {key for (key,) in _rows(pg_schema, "SELECT key FROM {s}.uniques")}
        assert before == {"ended", "waiting", "throttled"}, "finishing touches no key"
        broker.queue_job(Job.new({"n": 4}), unique="held")
        assert broker.reap(owner="test", lease=0, ttl=0) == []
        kept = {key for (key,) in _rows(pg_schema, "SELECT key FROM {s}.uniques")}
        assert kept == {"throttled", "held"}, "a throttle is held until its TTL, whatever its job did"


def test_a_sweep_walks_the_keys_in_bounded_slices(
    pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uniques, "SWEEP_BATCH", 2)
    with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker:
        jobs = [Job.new({"n": n}) for n in range(5)]
        for n, job in enumerate(jobs):
            broker.queue_job(job, unique=f"k{n}")
        broker.take(manager=MANAGER, worker=WORKER, limit=5)
        broker.finish_jobs(worker=WORKER, job_ids=[job.id for job in jobs[:4]])
        with psycopg.connect(SERVER_URL, autocommit=True) as conn:
            assert uniques.sweep(conn, pg_schema, "") == "k1"
            assert uniques.sweep(conn, pg_schema, "k1") == "k3"
            assert uniques.sweep(conn, pg_schema, "k3") == "", "past the last key: start again"
        assert _rows(pg_schema, "SELECT key FROM {s}.uniques") == [("k4",)]
