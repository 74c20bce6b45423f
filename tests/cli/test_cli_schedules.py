"""``qw run --schedule`` / ``--schedules FILE`` and ``qw schedules``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_support import REDIS_URL, Process, assert_one_line_error, invoke, script, wait_for_records
from qwtest_wait import wait_for

from qw_core.schedules import Schedule

pytestmark = pytest.mark.redis


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--schedule", "61 * * * *"], ["--schedule '61 * * * *'", "Bad minute"]),
        (["--schedule", "* * * * *={nope"], ["not JSON"]),
        (["--schedules", "/no/such/file.json"], ["cannot read the schedules file /no/such/file.json"]),
    ],
)
def test_a_bad_schedule_is_one_line_and_a_failure(flags: list[str], needles: list[str]) -> None:
    assert_one_line_error(invoke("run", "--url", REDIS_URL, *flags, "qwtest_targets:noop"), *needles)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{", "is not JSON"),
        ('{"cron": "* * * * *"}', "must hold a JSON list of schedules"),
        ('[{"cron": "* * * * *", "timezone": "Nowhere/Land"}]', "entry 1: unknown time zone 'Nowhere/Land'"),
        ('[{"cron": "* * * * *"}, {"cron": "* * * * *", "every": 5}]', "entry 2 has unknown key(s) every"),
    ],
)
def test_a_bad_schedules_file_names_the_entry(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "schedules.json"
    path.write_text(content, encoding="utf-8")
    assert_one_line_error(
        invoke("run", "--url", REDIS_URL, "--schedules", str(path), "qwtest_targets:noop"), needle
    )


def test_qw_schedules_lists_what_running_managers_declare(broker: Any) -> None:
    assert invoke("schedules", "--url", REDIS_URL).stdout == "no schedules: no running manager declares one\n"
    nightly = Schedule("30 2 * * *", id="nightly", timezone="Europe/Paris", queue="reports")
    broker.declare_schedules(manager="web-1", declarations={"nightly": nightly.declaration()}, ttl=30)
    tick = 1767231000.0  # 2026-01-01T02:30:00+01:00
    broker.enqueue_tick("nightly", tick, nightly.job(tick), manager="web-2")
    text = invoke("schedules", "--url", REDIS_URL).stdout
    header, row = text.splitlines()
    assert header.split() == ["ID", "CRON", "ZONE", "QUEUE", "NEXT", "RUN", "LAST", "RUN", "BY"]
    assert row.split()[:6] == ["nightly", "30", "2", "*", "*", "*"]
    assert "Europe/Paris  reports" in row
    assert "2026-01-01T02:30:00+01:00  web-2" in row
    [listed] = json.loads(invoke("schedules", "--url", REDIS_URL, "--json").stdout)
    assert listed["id"] == "nightly"
    assert listed["last_run"] == tick
    assert listed["last_manager"] == "web-2"
    assert listed["declared_by"] == ["web-1"]
    assert listed["next_run"] > tick
    assert set(listed) >= {"id", "cron", "timezone", "queue", "next_run", "last_run", "last_manager"}


def test_qw_schedules_marks_a_conflict(broker: Any) -> None:
    for manager, cron in (("old", "*/10 * * * *"), ("new", "*/15 * * * *")):
        declared = Schedule(cron, id="sync").declaration()
        broker.declare_schedules(manager=manager, declarations={"sync": declared}, ttl=30)
    rows = invoke("schedules", "--url", REDIS_URL).stdout.splitlines()[1:]
    assert [row.split()[:2] for row in rows] == [["sync", "(conflict)"], ["sync", "(conflict)"]]


def test_qw_run_enqueues_a_schedule_and_qw_schedules_shows_it(redis_db: Any, record_dir: Path) -> None:
    argv = [*script("qw"), "run", "--url", REDIS_URL, "-w", "1", "-n", "cron-1", "--heartbeat", "0.2s"]
    argv += ["--heartbeat-ttl", "1s", "--schedule", '* * * * * *={"hello": "tick"}', "qwtest_targets:record"]
    with Process(argv) as manager:
        rows = wait_for_records(record_dir, "ran", 2, timeout=30)
        assert all(row["data"] == {"hello": "tick"} for row in rows)
        listed = wait_for(
            lambda: (
                found
                if (found := json.loads(invoke("schedules", "--url", REDIS_URL, "--json").stdout))
                else None
            ),
            what="the schedule listed",
        )
        assert [entry["declared_by"] for entry in listed] == [["cron-1"]]
        assert listed[0]["cron"] == "* * * * * *"
        assert manager.stop() == 0
    assert invoke("schedules", "--url", REDIS_URL).stdout.startswith("no schedules")
