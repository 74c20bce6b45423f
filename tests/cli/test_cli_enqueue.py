"""``qw enqueue``: one job from an argument, many from a file or stdin, and every refusal."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from cli_support import DEAD_URL, REDIS_URL, assert_one_line_error, invoke, read_jsonl

pytestmark = pytest.mark.redis


def enqueue(*args: str, input: str | bytes | None = None, **env: str) -> Any:
    return invoke("enqueue", "--url", REDIS_URL, *args, input=input, env=env)


def test_one_job_from_an_argument(broker: Any) -> None:
    result = enqueue('{"hello": "world", "n": [1, 2.5, null]}')
    assert result.exit_code == 0, result.stderr
    (job_id,) = result.stdout.split()
    assert result.stderr == "queued 1 job\n"
    assert broker.queued_job_ids(None) == [job_id]
    job = broker.get_job(job_id)
    assert job.data == {"hello": "world", "n": [1, 2.5, None]}


def test_timeout_sets_the_jobs_own_time_limit(broker: Any) -> None:
    # meta["timeout"] is what the manager enforces (tests/reliability: a job past its limit).
    result = enqueue("--timeout", "90s", '{"n": 1}')
    assert result.exit_code == 0, result.stderr
    (job_id,) = result.stdout.split()
    assert broker.get_job(job_id).meta == {"timeout": 90.0}


def test_json_lines_file_is_one_batch_in_order(broker: Any, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"n": 1}\n\n{"n": 2}\n  {"n": 3}  \n"just a string"\n', encoding="utf-8")
    result = enqueue("--file", str(path))
    assert result.exit_code == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 4
    assert result.stderr == "queued 4 jobs\n"
    assert broker.queued_job_ids(None) == ids  # next to run first: input order
    assert [broker.get_job(i).data for i in ids] == [{"n": 1}, {"n": 2}, {"n": 3}, "just a string"]


def test_one_pretty_printed_document_from_stdin(broker: Any) -> None:
    document = json.dumps({"a": {"b": [1, 2]}, "c": "d"}, indent=4)
    for args in (["-"], ["--file", "-"]):
        result = enqueue(*args, input=document)
        assert result.exit_code == 0, result.stderr
        (job_id,) = result.stdout.split()
        assert broker.get_job(job_id).data == {"a": {"b": [1, 2]}, "c": "d"}


def test_utf8_with_byte_order_mark(broker: Any, tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes('\ufeff{"name": "Zoë"}'.encode())
    result = enqueue("-f", str(path))
    assert result.exit_code == 0, result.stderr
    assert broker.get_job(result.stdout.strip()).data == {"name": "Zoë"}


def test_manager_and_worker_queues(broker: Any) -> None:
    broker.register_manager("web1")
    broker.register_worker(manager="web1", worker="web1.42")
    to_manager = enqueue("--manager", "web1", '{"for": "web1"}')
    to_worker = enqueue("--worker", "web1.42", '{"for": "web1.42"}')
    assert to_manager.exit_code == 0, to_manager.stderr
    assert to_worker.exit_code == 0, to_worker.stderr
    assert broker.queued_job_ids("web1") == [to_manager.stdout.strip()]
    assert broker.held_job_ids("web1.42") == [to_worker.stdout.strip()]
    assert broker.queued_job_ids(None) == []


def test_a_named_queue(broker: Any) -> None:
    result = enqueue("--queue", "emails", '{"to": "ann"}')
    assert result.exit_code == 0, result.stderr
    assert broker.queued_job_ids(queue="emails") == [result.stdout.strip()]
    assert broker.queued_job_ids(None) == []
    default = enqueue("--queue", "default", '{"to": "bob"}')
    assert broker.queued_job_ids(None) == [default.stdout.strip()]


def test_more_jobs_than_one_batch(broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import qw_cli.enqueue

    monkeypatch.setattr(qw_cli.enqueue, "BATCH_SIZE", 3)
    lines = "\n".join(json.dumps({"n": n}) for n in range(8))
    result = enqueue("-", input=lines)
    assert result.exit_code == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 8
    assert broker.queued_job_ids(None) == ids


def test_queued_hook_fires_for_each_job(broker: Any, record_dir: Path) -> None:
    result = enqueue("-p", "qwtest_plugin", "--manager", "m1", "--force", "-", input='{"n": 1}\n{"n": 2}\n')
    assert result.exit_code == 0, result.stderr
    records = read_jsonl(record_dir, "plugin")
    assert [r["job_id"] for r in records] == result.stdout.split()
    assert [(r["hook"], r["data"], r["manager"]) for r in records] == [
        ("qw_job_queued", {"n": 1}, "m1"),
        ("qw_job_queued", {"n": 2}, "m1"),
    ]


def test_environment_supplies_settings_and_flags_win(broker: Any, record_dir: Path) -> None:
    from_env = invoke(
        "enqueue", "{}", env={"QW_URL": REDIS_URL, "QW_BACKEND": "redis", "QW_PLUGINS": "qwtest_plugin"}
    )
    assert from_env.exit_code == 0, from_env.stderr
    assert len(read_jsonl(record_dir, "plugin")) == 1
    flag_wins = invoke(
        "enqueue",
        "--url",
        REDIS_URL,
        "--backend",
        "redis",
        "{}",
        env={"QW_URL": DEAD_URL, "QW_BACKEND": "nope"},
    )
    assert flag_wins.exit_code == 0, flag_wins.stderr
    assert len(broker.queued_job_ids(None)) == 2


# -- refusals: one line, non-zero exit, nothing written -----------------------------------


@pytest.mark.parametrize(
    ("args", "stdin", "needles"),
    [
        (['{"a": }'], None, ["invalid JSON in the DATA argument", "line 1, column 7: Expecting value"]),
        (["{'a': 1}"], None, ["line 1, column 2: Expecting property name enclosed in double quotes"]),
        (['{"a": 1} {"b": 2}'], None, ["holds 2 JSON documents"]),
        (
            ["-"],
            '{"n": 1}\n{"n": 2}\n{"n": }\n{"n": 4}\n',
            ["invalid JSON in stdin: line 3, column 7: Expecting value"],
        ),
        (["-"], '{"n": 1}\n{"n": NaN}\n', ["stdin: line 2: NaN is not valid JSON"]),
        (["-"], '{"n": 1}\n[1, 2\n', ["line 3, column 1: Expecting ',' delimiter"]),
        (["-"], "", ["stdin is empty"]),
        (["-"], " \n\t\n", ["stdin is empty"]),
        ([""], None, ["the DATA argument is empty"]),
        (["-"], '{"n": 1}\n' + "[" * 1_000_000 + "]" * 1_000_000, ["stdin: line 2: nested too deeply"]),
        (["-"], '{"n": 1}\n{"n": ' + "1" * 5000 + "}", ["stdin: line 2: a number too long to read"]),
    ],
)
def test_bad_input_queues_nothing(
    redis_db: Any, args: list[str], stdin: str | None, needles: list[str]
) -> None:
    result = enqueue(*args, input=stdin)
    assert_one_line_error(result, *needles)
    assert result.stdout == ""
    assert redis_db.keys("*") == []


def test_malformed_file_names_line_and_column(redis_db: Any, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n    oops\n', encoding="utf-8")
    assert_one_line_error(
        enqueue("--file", str(path)), f"invalid JSON in {path}: line 3, column 5: Expecting value"
    )
    assert redis_db.keys("*") == []


def test_unreadable_files(redis_db: Any, tmp_path: Path) -> None:
    assert_one_line_error(enqueue("--file", str(tmp_path / "missing.json")), "cannot read", "No such file")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"a": "\xff"}')
    assert_one_line_error(enqueue("--file", str(binary)), "is not UTF-8 text")
    assert redis_db.keys("*") == []


def test_bad_names_queue_nothing(redis_db: Any) -> None:
    assert_one_line_error(enqueue("--manager", "all", "{}"), "reserved")
    assert_one_line_error(enqueue("--worker", "a b", "{}"), "whitespace")
    assert_one_line_error(enqueue("--manager", "x:y", "{}"), "':'")
    assert_one_line_error(enqueue("--queue", "x:y", "{}"), "':'")
    both = enqueue("--queue", "emails", "--manager", "web1", "{}")
    assert (both.exit_code, "give --queue or --manager, not both" in both.stderr) == (2, True)
    assert redis_db.keys("*") == []


def test_unknown_backend_lists_the_installed_ones() -> None:
    line = assert_one_line_error(invoke("enqueue", "--backend", "rediss", "{}"), "unknown backend 'rediss'")
    assert "memory" in line
    assert "redis" in line
    assert "did you mean 'redis'?" in line


def test_unreachable_redis_says_what_to_do() -> None:
    result = invoke("enqueue", "--url", DEAD_URL, "{}")
    assert_one_line_error(result, "127.0.0.1:1", "start Redis", "--url", "--embedded")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give the job data as DATA, --file FILE, or '-' to read stdin"),
        (["{}", "--file", "x.json"], "give DATA or --file, not both"),
        (["--manager", "a", "--worker", "a.1", "{}"], "give --manager or --worker, not both"),
        (["--timeout", "0", "{}"], "must be longer than 0"),
        (["--timeout", "soon", "{}"], "soon"),
        (["--at", "0001-01-01T00:00:00", "{}"], "'0001-01-01T00:00:00' is out of range"),
    ],
)
def test_usage_errors(redis_db: Any, args: list[str], message: str) -> None:
    result = enqueue(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert redis_db.keys("*") == []


@pytest.mark.parametrize("command", [("enqueue", "{}"), ("status",), ("jobs",)])
def test_a_backend_living_in_one_process_is_refused(command: tuple[str, ...]) -> None:
    """Queuing into a fresh in-memory broker would report success and lose the job."""
    result = invoke(command[0], "--backend", "memory", *command[1:])
    assert_one_line_error(result, "'memory' backend keeps its jobs inside the process")


@pytest.mark.parametrize(
    ("flag", "name", "said"),
    [
        ("--manager", "typo-mgr", "no manager named 'typo-mgr' is running (running: web1)"),
        ("--worker", "web1.99999", "no worker named 'web1.99999' is running"),
    ],
)
def test_a_manager_or_worker_that_is_not_running_is_refused_unless_forced(
    broker: Any, flag: str, name: str, said: str
) -> None:
    # Jobs sent to a name nobody serves would wait for ever (a worker's never recovered).
    broker.register_manager("web1")
    refused = enqueue(flag, name, '{"n": 1}')
    assert_one_line_error(refused, said, "--force")
    waiting = broker.queued_job_ids if flag == "--manager" else broker.held_job_ids
    assert waiting(name) == []
    forced = enqueue(flag, name, "--force", '{"n": 1}')
    assert forced.exit_code == 0, forced.stderr
    assert waiting(name) == [forced.stdout.strip()]


def test_at_stores_the_time_it_names_however_slow_the_input(broker: Any, redis_db: Any) -> None:
    # The due time is the one given, not "now + (given - when the command started)":
    # input that takes long to arrive does not make the job late.
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    result = enqueue("--at", when.isoformat(), '{"n": 1}')
    assert result.exit_code == 0, result.stderr
    [(job_id, due)] = redis_db.zrange("qw:delayed:all", 0, -1, withscores=True)
    assert job_id == result.stdout.strip()
    assert due == pytest.approx(when.timestamp(), abs=0.001)


def test_a_job_too_large_names_its_line_and_how_to_raise_the_limit(broker: Any, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n\n{"blob": "' + "x" * 600_000 + '"}\n', encoding="utf-8")
    result = enqueue("--file", str(path))
    line = assert_one_line_error(result, f"{path}, line 4: the job encodes to 600", "?max_job_size=")
    assert "limit of 524288" in line
    assert broker.queued_job_ids() == [], "nothing queued: all or nothing"
    raised = invoke("enqueue", "--url", REDIS_URL + "?max_job_size=1000000", "--file", str(path))
    assert raised.exit_code == 0, raised.stderr
    assert len(broker.queued_job_ids()) == 3


def test_unique_prints_the_holders_id_with_a_note_and_queues_nothing(broker: Any) -> None:
    first = enqueue("--unique", "report:2026-01", '{"report": "monthly"}')
    assert first.exit_code == 0, first.stderr
    (job_id,) = first.stdout.split()
    assert first.stderr == "queued 1 job\n"
    again = enqueue("--unique", "report:2026-01", '{"report": "again"}')
    assert again.exit_code == 0, again.stderr
    assert again.stdout.split() == [job_id]
    assert again.stderr == (
        f"qw: not queued: job {job_id} holds unique key 'report:2026-01' (queued, delayed or running); "
        "its id is printed\n"
    )
    assert broker.queued_job_ids(None) == [job_id]
    assert broker.get_job(job_id).meta == {"unique": {"key": "report:2026-01", "until": "end"}}


def test_unique_modes_and_their_refusals(broker: Any) -> None:
    start = enqueue("--unique", "k1", "--unique-until", "start", "{}")
    assert start.exit_code == 0, start.stderr
    assert broker.get_job(start.stdout.strip()).meta["unique"] == {"key": "k1", "until": "start"}
    throttle = enqueue("--unique", "k2", "--unique-for", "1m", "{}")
    assert throttle.exit_code == 0, throttle.stderr
    assert broker.get_job(throttle.stdout.strip()).meta["unique"] == {
        "key": "k2",
        "until": "ttl",
        "ttl": 60.0,
    }
    for args, says in [
        (["--unique-until", "start", "{}"], "--unique KEY"),
        (["--unique", "k3", "--unique-until", "start", "--unique-for", "5s", "{}"], "not both"),
        (["--unique", "", "{}"], "non-empty"),
        (["--unique", "k4", "-"], "one job"),
    ]:
        result = enqueue(*args, input='{"a": 1}\n{"b": 2}\n')
        assert result.exit_code == 2, result.stderr
        assert says in result.stderr
    assert len(broker.queued_job_ids(None)) == 2
