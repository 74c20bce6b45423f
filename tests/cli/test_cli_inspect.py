"""``qw status``, ``managers``, ``workers``, ``jobs``: text and ``--json``, on a state set up by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cli_support import DEAD_URL, REDIS_URL, assert_one_line_error, invoke

from qw_core.models import Failure, Job

pytestmark = pytest.mark.redis


@pytest.fixture
def state(broker: Any) -> dict[str, Any]:
    """Two managers; web1 has two workers, one holding a job; jobs on every kind of queue,
    two delayed (one for everybody, one for web2) and one failed."""
    broker.register_manager("web1")
    broker.register_manager("web2")
    broker.register_worker(manager="web1", worker="web1.101")
    broker.register_worker(manager="web1", worker="web1.102")
    broker.register_worker(manager="web2", worker="web2.201")
    shared = [Job.new({"n": n}) for n in range(3)]
    for_web1 = [Job.new({"m": n}, manager="web1") for n in range(2)]
    broker.queue_jobs([*shared, *for_web1])
    (held,) = broker.take(manager="web1", worker="web1.101", limit=1)  # takes web1's first job
    later = [Job.new({"later": 1}), Job.new({"later": 2}, manager="web2")]
    broker.queue_jobs(later, delay=3600)
    emails = [Job.new({"to": "ann"}, queue="emails"), Job.new({"to": "bob"}, queue="emails")]
    broker.queue_jobs(emails)
    broker.queue_jobs([Job.new({"doomed": True}, manager="web2")])
    (doomed,) = broker.take(manager="web2", worker="web2.201", limit=1)
    broker.fail_job(worker="web2.201", job=doomed, failure=Failure(exc_type="ValueError", message="no"))
    return {
        "shared": [j.id for j in shared],
        "web1": [j.id for j in for_web1[1:]],
        "held": held.id,
        "delayed": [j.id for j in later],
        "emails": [j.id for j in emails],
    }


def qw(*args: str, **env: str) -> Any:
    result = invoke(*args, "--url", REDIS_URL, env=env)
    assert result.exit_code == 0, result.stderr
    return result


def test_status_table(state: dict[str, Any]) -> None:
    lines = qw("status").stdout.splitlines()
    assert [line.split() for line in lines] == [
        ["KIND", "NAME", "QUEUED", "DELAYED", "HELD"],
        ["queue", "shared", "3", "1", "-"],
        ["queue", "emails", "2", "0", "-"],
        ["manager", "web1", "1", "0", "1"],
        ["worker", "web1.101", "-", "-", "1"],
        ["worker", "web1.102", "-", "-", "0"],
        ["manager", "web2", "0", "1", "0"],
        ["worker", "web2.201", "-", "-", "0"],
        ["failed", "jobs:", "1"],
    ]
    # aligned: every cell starts where its header does
    starts = [lines[0].index(header) for header in ("NAME", "QUEUED", "DELAYED", "HELD")]
    for line in lines[1:-1]:
        assert all(line[start - 1] == " " and line[start] != " " for start in starts), line


def test_status_json(state: dict[str, Any]) -> None:
    report = json.loads(qw("status", "--json").stdout)
    assert report == {
        "backend": REDIS_URL,
        "queued": 3,
        "delayed": 1,
        "queues": [{"name": "emails", "queued": 2, "delayed": 0}],
        "failed": 1,
        "problems": [],
        "stray": [],
        "managers": [
            {
                "name": "web1",
                "queued": 1,
                "delayed": 0,
                "held": 1,
                "workers": [{"name": "web1.101", "held": 1}, {"name": "web1.102", "held": 0}],
            },
            {
                "name": "web2",
                "queued": 0,
                "delayed": 1,
                "held": 0,
                "workers": [{"name": "web2.201", "held": 0}],
            },
        ],
    }


def test_managers(state: dict[str, Any]) -> None:
    assert qw("managers").stdout == "web1\nweb2\n"
    assert json.loads(qw("managers", "--json").stdout) == ["web1", "web2"]


def test_workers(state: dict[str, Any]) -> None:
    assert qw("workers").stdout == "web1.101\nweb1.102\nweb2.201\n"
    assert qw("workers", "web1").stdout == "web1.101\nweb1.102\n"
    assert json.loads(qw("workers", "--json").stdout) == {
        "web1": ["web1.101", "web1.102"],
        "web2": ["web2.201"],
    }
    assert json.loads(qw("workers", "web2", "--json").stdout) == {"web2": ["web2.201"]}


def test_jobs(state: dict[str, Any]) -> None:
    rows = [line.split() for line in qw("jobs").stdout.splitlines()]
    assert rows[0] == ["STATE", "QUEUE", "MANAGER", "WORKER", "JOB"]
    assert rows[1:] == [
        *(["queued", "-", "-", "-", job_id] for job_id in state["shared"]),
        ["delayed", "-", "-", "-", state["delayed"][0]],
        *(["queued", "emails", "-", "-", job_id] for job_id in state["emails"]),
        *(["queued", "-", "web1", "-", job_id] for job_id in state["web1"]),
        ["held", "-", "web1", "web1.101", state["held"]],
        ["delayed", "-", "web2", "-", state["delayed"][1]],
    ]
    only_web1 = json.loads(qw("jobs", "web1", "--json").stdout)
    assert only_web1 == [
        *(
            {"id": job_id, "state": "queued", "queue": None, "manager": "web1", "worker": None}
            for job_id in state["web1"]
        ),
        {"id": state["held"], "state": "held", "queue": None, "manager": "web1", "worker": "web1.101"},
    ]
    assert json.loads(qw("jobs", "web2", "--json").stdout) == [
        {"id": state["delayed"][1], "state": "delayed", "queue": None, "manager": "web2", "worker": None}
    ]
    assert json.loads(qw("jobs", "--queue", "emails", "--json").stdout) == [
        {"id": job_id, "state": "queued", "queue": "emails", "manager": None, "worker": None}
        for job_id in state["emails"]
    ]
    assert [r["id"] for r in json.loads(qw("jobs", "--queue", "default", "--json").stdout)] == [
        *state["shared"],
        state["delayed"][0],
    ]


def test_jobs_pages_with_limit_offset_and_all(state: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("qw_cli.inspect.PAGE", 2)  # several pages in every listing
    everything = json.loads(qw("jobs", "--json").stdout)
    assert len(everything) == 9
    assert json.loads(qw("jobs", "--json", "--all").stdout) == everything
    assert qw("jobs", "--json").stderr == "", "all of them shown: nothing to say"
    two = qw("jobs", "--json", "--limit", "2")
    assert json.loads(two.stdout) == everything[:2]
    assert two.stderr == "(2 of 9 shown; --limit/--offset or --all for more)\n"
    middle = qw("jobs", "-n", "3", "--offset", "2")
    assert [row.split()[-1] for row in middle.stdout.splitlines()[1:]] == [r["id"] for r in everything[2:5]]
    assert middle.stderr == "(jobs 3 to 5 of 9 shown; --limit/--offset or --all for more)\n"
    tail = qw("jobs", "--json", "--offset", "5", "--all")
    assert json.loads(tail.stdout) == everything[5:]
    past = qw("jobs", "--offset", "9")
    assert past.stdout.split() == ["STATE", "QUEUE", "MANAGER", "WORKER", "JOB"]
    assert past.stderr == "(none of 9 shown: --offset 9 is past the end)\n"
    assert json.loads(qw("jobs", "web1", "--json", "--offset", "1").stdout) == [
        {"id": state["held"], "state": "held", "queue": None, "manager": "web1", "worker": "web1.101"}
    ]


def test_jobs_lists_a_hundred_by_default(broker: Any) -> None:
    jobs = [Job.new({"n": n}) for n in range(150)]
    broker.queue_jobs(jobs)
    shown = qw("jobs")
    assert [row.split()[-1] for row in shown.stdout.splitlines()[1:]] == [j.id for j in jobs[:100]]
    assert shown.stderr == "(100 of 150 shown; --limit/--offset or --all for more)\n"
    assert [r["id"] for r in json.loads(qw("jobs", "--json", "--all").stdout)] == [j.id for j in jobs]


def test_jobs_rows_stay_aligned_from_page_to_page(
    state: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("qw_cli.inspect.PAGE", 1)
    lines = qw("jobs", "--all").stdout.splitlines()
    starts = [lines[0].index(header) for header in ("MANAGER", "WORKER", "JOB")]
    for line in lines[1:]:
        assert all(line[start - 1] == " " and line[start] != " " for start in starts), line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--all", "--limit", "5"], "give --limit or --all, not both"),
        (["--offset", "-1"], "-1"),
        (["-n", "0"], "0"),
    ],
)
def test_jobs_refuses_bad_paging(redis_db: Any, args: list[str], message: str) -> None:
    result = invoke("jobs", "--url", REDIS_URL, *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_empty_broker(redis_db: Any) -> None:
    assert qw("status").stdout.splitlines()[1:] == ["queue  shared  0       0        -", "failed jobs: 0"]
    assert qw("managers").stdout == ""
    assert json.loads(qw("jobs", "--json").stdout) == []
    assert qw("jobs").stdout.split() == ["STATE", "QUEUE", "MANAGER", "WORKER", "JOB"]


def test_url_from_environment(state: dict[str, Any]) -> None:
    result = invoke("managers", env={"QW_URL": REDIS_URL})
    assert result.stdout == "web1\nweb2\n"


@pytest.mark.parametrize("command", ["status", "managers", "workers", "jobs"])
def test_unreachable_redis(command: str) -> None:
    assert_one_line_error(invoke(command, "--url", DEAD_URL), "start Redis")


def test_bad_manager_name(redis_db: Any) -> None:
    assert_one_line_error(invoke("workers", "--url", REDIS_URL, "a:b"), "':'")
    assert_one_line_error(invoke("jobs", "--url", REDIS_URL, "all"), "reserved")


def test_status_names_a_queue_key_of_the_wrong_type(state: dict[str, Any], redis_db: Any) -> None:
    redis_db.set("web2:jobs", "not a list")
    lines = qw("status").stdout.splitlines()
    report = json.loads(qw("status", "--json").stdout)
    assert lines[-1].startswith("problem: web2:jobs is a string, not a list")
    assert report["problems"] == [lines[-1].removeprefix("problem: ")]


def test_jobs_for_a_manager_or_worker_that_is_not_running_show_as_stray(redis_db: Any) -> None:
    # What the first hour found: jobs queued (--force) for a misspelt manager, or for a
    # worker that never existed, vanished from qw status and waited for ever.
    for args in (["--manager", "typo-mgr"], ["--worker", "vm.99999"]):
        queued = invoke("enqueue", "--url", REDIS_URL, *args, "--force", '{"n": 1}')
        assert queued.exit_code == 0, queued.stderr
    text = qw("status").stdout
    rows = [line.split() for line in text.splitlines()]
    assert ["stray", "typo-mgr", "1", "-", "-"] in rows
    assert ["stray", "vm.99999", "1", "-", "-"] in rows
    assert "'qw move NAME' puts them on the shared queue" in text
    report = json.loads(qw("status", "--json").stdout)
    assert report["stray"] == [{"name": "typo-mgr", "queued": 1}, {"name": "vm.99999", "queued": 1}]


def test_qw_move_hands_stray_jobs_to_the_shared_queue_or_a_running_manager(redis_db: Any) -> None:
    job_ids = []
    for args in (["--manager", "typo-mgr"], ["--worker", "vm.99999"]):
        job_ids.append(invoke("enqueue", "--url", REDIS_URL, *args, "--force", '{"n": 1}').stdout.strip())
    moved = qw("move", "typo-mgr")
    assert moved.stderr == "moved 1 job from typo-mgr to the shared queue\n"
    assert redis_db.lrange("all:jobs", 0, -1) == [job_ids[0]]

    refused = invoke("move", "--url", REDIS_URL, "vm.99999", "--to", "billing")
    assert_one_line_error(refused, "manager 'billing' is not running", "--force")
    assert redis_db.lrange("vm.99999:jobs", 0, -1) == [job_ids[1]], "nothing moved"
    redis_db.sadd("all:managers", "billing")
    assert (
        qw("move", "vm.99999", "--to", "billing").stderr
        == "moved 1 job from vm.99999 to manager billing's queue\n"
    )
    assert redis_db.lrange("billing:jobs", 0, -1) == [job_ids[1]]
    assert json.loads(qw("status", "--json").stdout)["stray"] == []


def test_qw_move_refuses_a_running_workers_list(redis_db: Any) -> None:
    redis_db.sadd("all:managers", "web1")
    redis_db.sadd("web1:workers", "web1.101")
    redis_db.lpush("web1.101:jobs", "held-job")
    refused = invoke("move", "--url", REDIS_URL, "web1.101")
    assert_one_line_error(refused, "worker web1.101 is running")
    assert redis_db.lrange("web1.101:jobs", 0, -1) == ["held-job"]
