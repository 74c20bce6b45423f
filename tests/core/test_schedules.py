"""Schedules: parsing, the ticks of a cron expression in a zone, DST, what is due."""

from __future__ import annotations

import datetime
import itertools
from zoneinfo import ZoneInfo

import pytest

from qw_core.errors import ConfigurationError, InvalidTaskCall
from qw_core.schedules import (
    CronTimes,
    Schedule,
    due_ticks,
    schedule_from_dict,
    tick_job_id,
)
from qw_core.tasks import Router


def at(*parts: int, zone: str = "UTC", fold: int = 0) -> float:
    return datetime.datetime(*parts, tzinfo=ZoneInfo(zone), fold=fold).timestamp()  # type: ignore[misc]


def local(tick: float, zone: str) -> str:
    return datetime.datetime.fromtimestamp(tick, ZoneInfo(zone)).isoformat()


def ticks_between(times: CronTimes, start: float, end: float) -> list[float]:
    found = []
    tick = times.after(start)
    while tick is not None and tick <= end:
        found.append(tick)
        tick = times.after(tick)
    return found


# -- declaring -----------------------------------------------------------------------------


def test_a_schedule_reads_as_the_issue_writes_it() -> None:
    schedule = Schedule("*/5 * * * *", data={"a": 1}, queue="reports", timezone="Europe/Paris")
    assert schedule.id.startswith("cron:")
    assert schedule.queue == "reports"
    assert Schedule("*/5 * * * *", data={"a": 1}, queue="reports", timezone="Europe/Paris") == schedule
    assert Schedule("*/5 * * * *", data={"a": 2}, queue="reports", timezone="Europe/Paris").id != schedule.id
    assert Schedule("* * * * *", queue="default").queue is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "bad cron expression '61 \\* \\* \\* \\*': Bad minute"),
        ({"cron": "* * *"}, "Wrong number of fields"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"cron": "* * * * *", "timezone": 1}, "unknown time zone 1"),
        ({"cron": "* * * * *", "missed": "some"}, "missed must be 'latest' or 'all'"),
        ({"cron": "* * * * *", "catch_up": 0}, "catch_up must be from 1 to 1000"),
        ({"cron": "* * * * *", "data": {"s": {1}}}, "data\\['s'\\] is a set"),
        ({"cron": "* * * * *", "id": "two words"}, "whitespace"),
        ({"cron": "* * * * *", "queue": " "}, "a schedule's queue must be a queue's name"),
        ({"cron": "* * * * *", "meta": {"unique": "k"}}, "meta\\['unique'\\] must be an object with a 'key'"),
        ({"cron": "* * * * *", "meta": "ab"}, "meta must be an object \\(a mapping\\), not 'ab'"),
        ({"cron": "* * * * *", "meta": [["retry", 1]]}, "meta must be an object"),
        ({"cron": "* * * * *", "meta": {"retry": 3}}, "meta\\['retry'\\] must be a JSON object, not 3"),
        ({"cron": "* * * * *", "meta": {"retry": {"max_retires": 3}}}, "unknown keys \\['max_retires'\\]"),
        ({"cron": "* * * * *", "meta": {"retry": {"backoff": -1}}}, "meta\\['retry'\\] is invalid"),
        (
            {"cron": "* * * * *", "meta": {"unique": {"key": "k", "until": "later"}}},
            "held until 'end' or 'start'",
        ),
    ],
)
def test_a_bad_schedule_is_refused_in_one_line(kwargs: dict[str, object], message: str) -> None:
    cron = kwargs.pop("cron")
    with pytest.raises(ConfigurationError, match=message):
        Schedule(cron, **kwargs)  # type: ignore[arg-type]


def test_a_schedules_file_entry_names_what_is_wrong() -> None:
    assert schedule_from_dict({"cron": "0 3 * * *", "id": "nightly", "data": {"n": 1}}).id == "nightly"
    with pytest.raises(ConfigurationError, match="entry 2 has unknown key\\(s\\) crom"):
        schedule_from_dict({"crom": "x"}, "entry 2")
    with pytest.raises(ConfigurationError, match="entry 2 has no 'cron' key"):
        schedule_from_dict({}, "entry 2")
    with pytest.raises(ConfigurationError, match="entry 2 must be a JSON object"):
        schedule_from_dict(["0 3 * * *"], "entry 2")


def test_a_tick_job_has_an_id_derived_from_the_schedule_and_the_tick() -> None:
    schedule = Schedule("* * * * *", data={"x": 1}, id="s", meta={"retry": {"max_retries": 2}})
    job = schedule.job(120.0)
    assert job.id == tick_job_id("s", 120.0) == schedule.job(120.0).id
    assert job.id not in {tick_job_id("s", 180.0), tick_job_id("t", 120.0)}
    assert job.data == {"x": 1}
    assert dict(job.meta) == {"retry": {"max_retries": 2}, "schedule": "s", "tick": 120.0}


# -- ticks -----------------------------------------------------------------------------------


def test_six_fields_tick_every_second_given() -> None:
    times = CronTimes("*/2 * * * * *", "UTC")
    assert ticks_between(times, 100.0, 106.0) == [102.0, 104.0, 106.0]
    assert list(itertools.islice(times.upto(105.5), 2)) == [104.0, 102.0]
    assert times.after(101.9) == 102.0


def test_due_ticks_run_the_latest_or_a_bounded_catch_up() -> None:
    every = Schedule("* * * * * *")
    assert due_ticks(every, since=100, now=110.5) == [110.0]
    assert due_ticks(every, since=110, now=110.5) == []
    catch = Schedule("* * * * * *", missed="all", catch_up=3)
    assert due_ticks(catch, since=100, now=110.5) == [108.0, 109.0, 110.0]
    assert due_ticks(catch, since=108, now=110.5) == [109.0, 110.0]


@pytest.mark.parametrize(
    ("zone", "day", "skipped_local", "jump_utc"),
    [
        ("Europe/Paris", (2024, 3, 31), "2024-03-31T03:00:00+02:00", (2024, 3, 31, 1, 0)),
        ("America/New_York", (2024, 3, 10), "2024-03-10T03:00:00-04:00", (2024, 3, 10, 7, 0)),
    ],
)
@pytest.mark.parametrize("cron", ["30 2 * * *", "0 30 2 * * *"])  # with seconds too
def test_a_daily_time_the_clocks_skip_runs_once_at_the_jump(
    zone: str, day: tuple[int, int, int], skipped_local: str, jump_utc: tuple[int, ...], cron: str
) -> None:
    times = CronTimes(cron, zone)
    found = ticks_between(times, at(*day, 0, 0, zone=zone) - 86400, at(*day, 23, 59, zone=zone) + 86400)
    assert [local(t, zone) for t in found][1] == skipped_local
    assert found[1] == at(*jump_utc)
    assert len(found) == 3  # the day before, that day once, the day after


@pytest.mark.parametrize(
    ("zone", "day"), [("Europe/Paris", (2024, 10, 27)), ("America/New_York", (2024, 11, 3))]
)
@pytest.mark.parametrize("seconds", ["", "0 "])  # without and with a seconds field
def test_a_daily_time_the_clocks_pass_twice_runs_once_the_first_time(
    zone: str, day: tuple[int, int, int], seconds: str
) -> None:
    hour = 2 if zone == "Europe/Paris" else 1  # the repeated hour
    times = CronTimes(f"{seconds}30 {hour} * * *", zone)
    found = ticks_between(times, at(*day, 0, 0, zone=zone), at(*day, 23, 59, zone=zone))
    assert found == [at(*day, hour, 30, zone=zone, fold=0)]
    # Asked from inside the second pass, the latest tick is still the first one.
    second_pass = at(*day, hour, 45, zone=zone, fold=1)
    assert next(times.upto(second_pass)) == found[0]
    assert times.after(second_pass) == at(day[0], day[1], day[2] + 1, hour, 30, zone=zone)


def test_an_interval_keeps_its_pace_through_both_changes() -> None:
    hourly = CronTimes("0 * * * *", "Europe/Paris")
    spring = ticks_between(hourly, at(2024, 3, 30, 23, 30), at(2024, 3, 31, 3, 30))
    autumn = ticks_between(hourly, at(2024, 10, 26, 22, 30), at(2024, 10, 27, 3, 30))
    for found in (spring, autumn):
        assert [b - a for a, b in itertools.pairwise(found)] == [3600.0] * (len(found) - 1)
    assert len(autumn) == 5  # 02:00 CEST and 02:00 CET both fire: an hour apart


def test_a_schedule_that_can_never_fire_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="Bad day-of-month"):
        Schedule("0 0 30 2 *")  # February 30th


# -- on a router ------------------------------------------------------------------------------


def test_a_task_declares_its_schedule() -> None:
    router = Router()

    @router.task(queue="reports", retry=2, schedule="0 3 * * *")
    def nightly() -> None: ...

    @router.task
    def send(to: str, *, loud: bool = False) -> None: ...

    weekly = router.schedule(
        send, "0 9 * * MON", args=["ops"], kwargs={"loud": True}, timezone="Europe/Paris"
    )
    nightly_schedule, weekly_schedule = router.qw_schedules
    assert nightly_schedule.id == nightly.name
    assert nightly_schedule.queue == "reports"
    assert nightly_schedule.data == nightly.job().data
    assert nightly_schedule.meta == nightly.job().meta
    assert weekly is weekly_schedule
    assert weekly.data == send.job("ops", loud=True).data
    with pytest.raises(ConfigurationError, match="in use on this router"):
        router.schedule(send, "0 10 * * *", args=["x"])
    with pytest.raises(InvalidTaskCall, match="missing a required argument"):
        router.schedule(send, "0 10 * * *", id="other")


def test_a_task_that_needs_arguments_cannot_take_a_bare_schedule() -> None:
    router = Router()
    with pytest.raises(InvalidTaskCall):

        @router.task(schedule="* * * * *")
        def needs(x: int) -> None: ...
