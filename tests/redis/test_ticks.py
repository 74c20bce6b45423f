"""Periodic jobs on a real Redis, against an adversary: keys of the wrong type, records
qw did not write, bad names. Whatever is refused is refused whole: no tick recorded
without its job, no job without its tick."""

from __future__ import annotations

import logging
from contextlib import closing

import pytest
import redis
from qwtest_wait import wait_for
from redis_support import redis_url

from qw_core.errors import InvalidName, QwError
from qw_core.scheduler import Scheduler
from qw_core.schedules import Schedule, tick_job_id
from qw_redis.broker import RedisBroker

pytestmark = pytest.mark.redis

REDIS_DB = 4
TICK = 1767225600.0


def test_a_tick_key_of_the_wrong_type_refuses_and_queues_nothing(
    real_client: redis.Redis, real_broker: RedisBroker
) -> None:
    real_client.set("qw:tick:s", "not a hash")
    with pytest.raises(QwError, match="qw:tick:s is a string"):
        real_broker.enqueue_tick("s", TICK, Schedule("* * * * *", id="s").job(TICK), manager="m1")
    assert real_client.llen("all:jobs") == 0
    assert not real_client.exists(f"job:{tick_job_id('s', TICK)}", f"qw:job:{tick_job_id('s', TICK)}")


def test_a_queue_of_the_wrong_type_refuses_and_records_no_tick(
    real_client: redis.Redis, real_broker: RedisBroker
) -> None:
    real_client.set("qw:queue:reports", "not a list")
    schedule = Schedule("* * * * *", id="s", queue="reports")
    with pytest.raises(QwError, match="WRONGTYPE"):
        real_broker.enqueue_tick("s", TICK, schedule.job(TICK), manager="m1")
    assert not real_client.exists("qw:tick:s")
    assert real_broker.tick_states(["s"]) == {}
    real_client.delete("qw:queue:reports")  # mended: the same tick goes through
    assert real_broker.enqueue_tick("s", TICK, schedule.job(TICK), manager="m1").enqueued


def test_a_schedule_whose_queue_key_is_broken_does_not_stop_the_others(
    real_client: redis.Redis, redis_db: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Another program's string where one schedule's queue should be: each of its ticks is
    # refused. The manager's other schedules tick on regardless, and it ticks once mended.
    real_client.set("qw:queue:reports", "not a list")
    scheduler = Scheduler(
        lambda: RedisBroker.from_url(redis_url(redis_db)),
        manager="m1",
        schedules=[
            Schedule("* * * * * *", id="reports", queue="reports"),  # first: each pass meets it first
            Schedule("* * * * * *", id="beat"),
        ],
        heartbeat=0.5,
        ttl=2.0,
    )
    with caplog.at_level(logging.WARNING, logger="qw.manager"):
        scheduler.start()
        try:
            wait_for(lambda: real_client.llen("all:jobs") >= 2, timeout=10, what="two ticks of 'beat'")
            assert "schedule reports" in caplog.text, "the broken schedule is reported"
            real_client.delete("qw:queue:reports")
            wait_for(lambda: real_client.llen("qw:queue:reports") >= 1, timeout=10, what="a 'reports' tick")
        finally:
            scheduler.stop()


@pytest.mark.parametrize("key", ["qw:schedulers", "qw:declared:m1"])
def test_a_declarations_key_of_the_wrong_type_does_not_stop_the_ticks(
    real_client: redis.Redis, redis_db: int, caplog: pytest.LogCaptureFixture, key: str
) -> None:
    # Another program's string where the declarations go (every manager's set, or this
    # manager's hash): declaring fails, which only lists the schedules; they tick on,
    # from the last ticks read alone, and are listed again once the key is mended.
    real_client.set(key, "not ours")
    scheduler = Scheduler(
        lambda: RedisBroker.from_url(redis_url(redis_db)),
        manager="m1",
        schedules=[Schedule("* * * * * *", id="beat")],
        heartbeat=0.5,
        ttl=2.0,
    )
    with (
        closing(RedisBroker.from_url(redis_url(redis_db))) as broker,
        caplog.at_level(logging.INFO, logger="qw.manager"),
    ):
        scheduler.start()
        try:
            wait_for(lambda: real_client.llen("all:jobs") >= 2, timeout=10, what="two ticks of 'beat'")
            assert caplog.text.count("declaring its schedules failed") == 1, "said once"
            assert f"{key} is a string" in caplog.text
            assert broker.schedules() == []
            real_client.delete(key)
            wait_for(lambda: [s.id for s in broker.schedules()] == ["beat"], timeout=10, what="listed")
            assert "declared again" in caplog.text
        finally:
            scheduler.stop()


def test_a_unique_key_of_the_wrong_type_refuses_the_tick_whole(
    real_client: redis.Redis, real_broker: RedisBroker
) -> None:
    real_client.hset("qw:unique:sync", "not", "a string")
    schedule = Schedule("* * * * *", id="s", meta={"unique": {"key": "sync", "until": "end"}})
    with pytest.raises(QwError, match="qw:unique:sync is a hash"):
        real_broker.enqueue_tick("s", TICK, schedule.job(TICK), manager="m1")
    assert not real_client.exists("qw:tick:s", f"job:{tick_job_id('s', TICK)}", "qw:uniques")
    assert real_client.llen("all:jobs") == 0
    real_client.delete("qw:unique:sync")  # mended: the same tick goes through, taking the key
    assert real_broker.enqueue_tick("s", TICK, schedule.job(TICK), manager="m1").enqueued
    assert real_client.get("qw:unique:sync") == f"e:{tick_job_id('s', TICK)}"


def test_listing_passes_over_what_qw_did_not_write(
    real_client: redis.Redis, real_broker: RedisBroker
) -> None:
    good = Schedule("0 * * * *", id="good")
    real_broker.declare_schedules(manager="m1", declarations={"good": good.declaration()}, ttl=30)
    real_client.hset("qw:declared:m1", "garbage", "{not json")
    real_client.sadd("qw:schedulers", "m2")
    real_client.set("qw:declared:m2", "a string")
    real_client.hset("qw:tick:good", mapping={"tick": "soon", "manager": "m1"})
    [listed] = real_broker.schedules()
    assert (listed.id, listed.last_run) == ("good", None)
    real_client.delete("qw:schedulers")
    real_client.set("qw:schedulers", "a string")
    assert real_broker.schedules() == []
    assert any("qw:schedulers" in problem for problem in real_broker.problems())
    with pytest.raises(QwError, match="qw:schedulers is a string"):
        real_broker.declare_schedules(manager="m1", declarations={"good": good.declaration()}, ttl=30)


def test_a_last_tick_qw_did_not_write_counts_as_none_and_the_next_tick_replaces_it(
    real_client: redis.Redis, real_broker: RedisBroker
) -> None:
    # Declaring read it as a number and failed, which stopped every schedule of the
    # manager (its scheduler declares before it ticks); listing already passed over it.
    schedule = Schedule("* * * * *", id="s")
    real_client.hset("qw:tick:s", mapping={"tick": "soon", "manager": "m0"})
    assert real_broker.declare_schedules(
        manager="m1", declarations={"s": schedule.declaration()}, ttl=30
    ) == {"s": None}
    assert real_broker.tick_states(["s"]) == {}
    assert real_broker.enqueue_tick("s", TICK, schedule.job(TICK), manager="m1").enqueued
    assert real_broker.tick_states(["s"])["s"].tick == TICK


def test_names_are_checked_before_anything_is_written(
    real_client: redis.Redis, real_broker: RedisBroker
) -> None:
    schedule = Schedule("* * * * *", id="s")
    with pytest.raises(InvalidName):
        real_broker.enqueue_tick("s", TICK, schedule.job(TICK), manager="bad:name")
    with pytest.raises(InvalidName):
        real_broker.declare_schedules(manager="all", declarations={}, ttl=30)
    assert real_client.dbsize() == 0


def test_a_declaration_lasts_its_ttl_and_keeps_the_last_tick_for_a_week(
    real_client: redis.Redis, real_broker: RedisBroker
) -> None:
    schedule = Schedule("* * * * *", id="s")
    real_broker.enqueue_tick("s", TICK, schedule.job(TICK), manager="m1")
    real_client.pexpire("qw:tick:s", 1000)
    real_broker.declare_schedules(manager="m1", declarations={"s": schedule.declaration()}, ttl=30)
    assert 29_000 < real_client.pttl("qw:declared:m1") <= 30_000
    assert real_client.pttl("qw:tick:s") > 6 * 86400 * 1000  # refreshed by the declaration
