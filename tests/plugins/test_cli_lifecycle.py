"""The CLI for the lifecycle features: ``qw failed``, ``qw enqueue --delay/--at/--max-retries``
and the ``qw run`` retry, registry and plugin-setting flags (Redis database 2)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from plugin_support import CLI_REDIS_DB, redis_url
from qwtest_redis import flushed_db

from qw_cli.main import main
from qw_cli.options import DURATION
from qw_cli.output import progress_bar
from qw_cli.run import METRICS_PLUGIN, plugin_config
from qw_core import Failure, Job, RetryPolicy
from qw_redis.broker import RedisBroker

pytestmark = pytest.mark.redis

URL = redis_url(CLI_REDIS_DB)


def qw(*args: str) -> Result:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("QW_")}
    env["QW_URL"] = URL
    return CliRunner().invoke(main, list(args), env=env, prog_name="qw", catch_exceptions=False)


@pytest.fixture
def broker() -> Iterator[RedisBroker]:
    with flushed_db(CLI_REDIS_DB):
        broker = RedisBroker.from_url(URL)
        yield broker
        broker.close()


def fail_jobs(broker: RedisBroker, *data: Any, manager: str | None = None) -> list[Job]:
    jobs = [Job.new(item, manager=manager) for item in data]
    broker.queue_jobs(jobs)
    taken = broker.take(manager="m1", worker="m1.1", limit=len(jobs))
    for n, job in enumerate(taken):
        failure = Failure.from_exception(_raised(ValueError(f"bad {n}\nsecond line")), worker="m1.1")
        broker.fail_job(worker="m1.1", job=job, failure=failure)
    return taken


def _raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


# -- qw failed -----------------------------------------------------------------------------


def test_failed_lists_newest_first_as_a_table(broker: RedisBroker) -> None:
    first, second = fail_jobs(broker, {"n": 1}, {"n": 2}, manager="m1")
    result = qw("failed")
    assert result.exit_code == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["FAILED", "AT", "ID", "QUEUE", "ATTEMPTS", "ERROR"]
    assert [row.split()[1] for row in rows] == [second.id, first.id]
    assert rows[0].split()[2:5] == ["m1", "1", "ValueError:"]
    assert "second line" in rows[0], "a multi-line message stays on one row"


def test_failed_json_and_limit(broker: RedisBroker) -> None:
    fail_jobs(broker, {"n": 1}, {"n": 2}, {"n": 3})
    result = qw("failed", "--json", "--limit", "2")
    records = json.loads(result.stdout)
    assert len(records) == 2
    assert records[0]["data"] == {"n": 3}
    assert records[0]["queue"] == "shared"
    assert records[0]["exc_type"] == "builtins.ValueError"
    assert {"id", "attempts", "failed_at", "worker", "message", "meta"} <= set(records[0])
    assert "(2 of 3 shown" in qw("failed", "--limit", "2").stderr


def test_failed_show_prints_everything_the_registry_keeps(broker: RedisBroker) -> None:
    (job,) = fail_jobs(broker, {"image": "cat.png"})
    text = qw("failed", "show", job.id).stdout
    assert f"id:         {job.id}" in text
    assert "error:      builtins.ValueError: bad 0" in text
    assert 'data:       {"image": "cat.png"}' in text
    assert "worker:     m1.1" in text
    assert "Traceback (most recent call last)" in text
    record = json.loads(qw("failed", "show", "--json", job.id).stdout)
    assert record["traceback"].startswith("Traceback")
    assert record["attempts"] == 1


def test_failed_show_of_an_unknown_id_is_a_one_line_error(broker: RedisBroker) -> None:
    result = qw("failed", "show", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == "qw: error: no failed job 'nope' (see 'qw failed')"


def fail_with_ids(broker: RedisBroker, *job_ids: str) -> None:
    jobs = [Job(id=job_id, data={"n": n}) for n, job_id in enumerate(job_ids)]
    broker.queue_jobs(jobs)
    for job in broker.take(manager="m1", worker="m1.1", limit=len(jobs)):
        broker.fail_job(worker="m1.1", job=job, failure=Failure(exc_type="E", message="no"))


def test_ids_may_be_given_by_a_unique_start(broker: RedisBroker) -> None:
    fail_with_ids(broker, "abc123", "abd456", "a*c[x]9", "ab")
    assert json.loads(qw("failed", "show", "--json", "abc").stdout)["id"] == "abc123"
    assert json.loads(qw("failed", "show", "--json", "a*").stdout)["id"] == "a*c[x]9"  # no glob
    assert json.loads(qw("failed", "show", "--json", "ab").stdout)["id"] == "ab"  # a whole id wins
    ambiguous = qw("failed", "show", "abd", "--json")
    assert json.loads(ambiguous.stdout)["id"] == "abd456"
    two = qw("failed", "requeue", "a")
    assert two.exit_code == 1
    assert two.stderr.startswith("qw: error: 'a' is the start of several failed jobs' ids (")
    assert two.stderr.strip().endswith("give more of it")
    assert len(two.stderr.strip().splitlines()) == 1
    assert broker.failed_count() == 4  # nothing requeued
    assert qw("failed", "requeue", "abc").stdout.split() == ["abc123"]
    assert qw("failed", "purge", "abd").exit_code == 0
    assert sorted(job.job.id for job in broker.failed_jobs()) == ["a*c[x]9", "ab"]


def test_requeue_one_puts_it_back_on_its_queue_with_attempts_reset(broker: RedisBroker) -> None:
    first, second = fail_jobs(broker, {"n": 1}, {"n": 2}, manager="m1")
    result = qw("failed", "requeue", first.id)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == [first.id]
    assert broker.queued_job_ids("m1") == [first.id]
    assert broker.failed_count() == 1
    again = qw("failed", "requeue", first.id, second.id)
    assert again.exit_code == 1
    assert "no failed job" in again.stderr
    assert broker.queued_job_ids("m1") == [first.id, second.id]


def test_requeue_of_a_job_whose_unique_key_is_held_says_why_it_stays(broker: RedisBroker) -> None:
    job = Job.new({"n": 1})
    broker.queue_job(job, unique="k")
    [taken] = broker.take(manager="m1", worker="m1.1")
    broker.fail_job(worker="m1.1", job=taken, failure=Failure(exc_type="E", message="m"))
    holder = Job.new({"n": 2})
    assert broker.queue_job(holder, unique="k") == holder.id
    result = qw("failed", "requeue", job.id)
    assert result.exit_code == 1
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"qw: error: job {job.id} stays in the failed registry: ")
    assert "unique key" in result.stderr
    assert broker.failed_count() == 1
    assert broker.queued_job_ids() == [holder.id]


def test_requeue_all_and_purge(broker: RedisBroker) -> None:
    jobs = fail_jobs(broker, {"n": 1}, {"n": 2}, {"n": 3})
    assert qw("failed", "requeue").exit_code == 2, "IDs or --all"
    result = qw("failed", "requeue", "--all")
    assert sorted(result.stdout.split()) == sorted(j.id for j in jobs)
    assert "requeued 3 jobs" in result.stderr
    assert sorted(broker.queued_job_ids()) == sorted(j.id for j in jobs)
    taken = broker.take(manager="m1", worker="m1.2", limit=3)
    assert [j.attempts for j in taken] == [0, 0, 0]
    fail_jobs(broker, {"n": 4}, {"n": 5})
    assert "purged 1 failed job" in qw("failed", "purge", broker.failed_jobs()[0].job.id).stderr
    assert qw("failed", "purge").exit_code == 2, "IDs or --all: nothing given is no licence to delete all"
    assert broker.failed_count() == 1
    assert "purged 1 failed job" in qw("failed", "purge", "--all").stderr
    assert broker.failed_count() == 0


def test_requeue_and_purge_all_show_progress_on_a_terminal_only(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("qw_redis.administering.REQUEUE_BATCH", 2)
    monkeypatch.setattr("qw_redis.administering.PURGE_BATCH", 2)
    jobs = fail_jobs(broker, *({"n": n} for n in range(5)))
    quiet = qw("failed", "requeue", "--all")
    assert quiet.stdout.split() == [job.id for job in jobs], "the oldest failure first"
    assert quiet.stderr == "requeued 5 jobs\n", "no progress into a file or a pipe"

    jobs = fail_jobs(broker, *({"n": n} for n in range(5)))
    monkeypatch.setattr("qw_cli.output.is_terminal", lambda stream: True)
    monkeypatch.setattr("qw_cli.output.PROGRESS_EVERY", 0.0)
    shown = qw("failed", "requeue", "--all")
    assert shown.stdout.split() == [job.id for job in jobs], "stdout has the ids alone"
    clear = "\r\x1b[K"
    assert shown.stderr == "".join(f"\r{progress_bar('requeued', n, 5)}\x1b[K{clear}" for n in (2, 4, 5)) + (
        "requeued 5 jobs\n"
    ), "the line is taken away before ids are printed"
    fail_jobs(broker, *({"n": n} for n in range(5)))
    purged = qw("failed", "purge", "--all")
    assert (
        purged.stderr
        == "".join(f"\r{progress_bar('purged', n, 5)}\x1b[K" for n in (2, 4, 5))
        + f"{clear}purged 5 failed jobs\n"
    )


def test_requeue_all_says_what_it_left_in_the_registry(broker: RedisBroker) -> None:
    blocked, free = fail_jobs(broker, {"n": 1}, {"n": 2})
    broker.queue_jobs([Job(id=blocked.id, data={"live": True})])
    result = qw("failed", "requeue", "--all")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == [free.id]
    assert result.stderr == "requeued 1 job (1 left in the failed registry: see 'qw failed')\n"


@pytest.mark.parametrize("command", ["purge", "requeue"])
def test_an_id_not_in_the_registry_is_an_error(broker: RedisBroker, command: str) -> None:
    (job,) = fail_jobs(broker, {"n": 1})
    result = CliRunner().invoke(main, ["failed", command, "--url", URL, job.id, "no-such-job"])
    assert result.exit_code == 1
    assert "no failed job 'no-such-job'" in result.stderr
    assert broker.failed_count() == 0, "the others are done all the same"


def test_the_url_may_be_given_to_the_group_or_the_subcommand(broker: RedisBroker) -> None:
    (job,) = fail_jobs(broker, {"n": 1})
    runner = CliRunner()
    env = {k: None for k in os.environ if k.startswith("QW_")}
    for args in (["failed", "--url", URL, "show", job.id], ["failed", "show", job.id, "--url", URL]):
        result = runner.invoke(main, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        assert job.id in result.stdout


# -- qw enqueue --delay / --at / --max-retries ---------------------------------------------


def test_enqueue_with_a_delay_waits_in_the_delayed_set(broker: RedisBroker) -> None:
    result = qw("enqueue", "--delay", "30s", '{"n": 1}')
    assert result.exit_code == 0, result.stderr
    (job_id,) = result.stdout.split()
    assert broker.delayed_job_ids() == [job_id]
    assert broker.queued_job_ids() == []


def test_enqueue_at_a_time(broker: RedisBroker) -> None:
    future = qw("enqueue", "--manager", "m1", "--at", "2999-01-01T00:00:00Z", '{"n": 1}').stdout.split()
    past = qw("enqueue", "--at", "2000-01-01T00:00:00+01:00", '{"n": 2}').stdout.split()
    assert broker.delayed_job_ids("m1") == future
    assert broker.queued_job_ids() == past


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--at", "tomorrow"], "is not an ISO 8601 time"),
        (["--delay", "soon"], "is not a duration"),
        (["--delay", "1s", "--at", "2999-01-01T00:00:00"], "give --delay or --at, not both"),
        (["--delay", "1s", "--worker", "m1.1"], "cannot be delayed"),
    ],
)
def test_enqueue_refuses_bad_timing(broker: RedisBroker, args: list[str], message: str) -> None:
    result = qw("enqueue", *args, '{"n": 1}')
    assert result.exit_code == 2
    assert message in result.stderr
    assert broker.queued_job_ids() == broker.delayed_job_ids() == []


def test_enqueue_max_retries_travels_in_the_jobs_meta(broker: RedisBroker) -> None:
    (job_id,) = qw("enqueue", "--max-retries", "4", '{"n": 1}').stdout.split()
    job = broker.get_job(job_id)
    assert job is not None
    assert job.meta == {"retry": {"max_retries": 4}}


# -- qw run's flags --------------------------------------------------------------------------


def test_durations() -> None:
    assert [DURATION.convert(v, None, None) for v in ("30", "1.5", "250ms", "30s", "5m", "2h", "1d")] == [
        30,
        1.5,
        0.25,
        30,
        300,
        7200,
        86400,
    ]
    with pytest.raises(click.BadParameter):
        DURATION.convert("-1s", None, None)


def test_run_help_documents_the_lifecycle_flags() -> None:
    text = qw("run", "--help").stdout
    for flag in (
        "--max-retries",
        "--retry-backoff",
        "--retry-on",
        "--no-retry-on",
        "--failed-max",
        "--metrics-port",
    ):
        assert flag in text
    assert "[default: 0" in text, "no retries unless configured"


def test_plugin_settings_from_the_command_line() -> None:
    config = plugin_config(
        ("mymod",), ("a.n=2", "a.s=text", 'a.j={"x": [1]}'), 9999, RetryPolicy(max_retries=2)
    )
    assert config.modules == ("mymod", METRICS_PLUGIN)
    assert config.options == {"a.n": 2, "a.s": "text", "a.j": {"x": [1]}, "prometheus.port": 9999}
    assert config.retry.max_retries == 2
    with pytest.raises(click.BadParameter):
        plugin_config((), ("no-equals",), None, RetryPolicy())


def test_run_refuses_an_invalid_retry_setting() -> None:
    result = qw("run", "--retry-jitter", "2", "qw_core.examples:echo")
    assert result.exit_code == 2
    assert "--retry-jitter" in result.stderr
