"""Worker recycling with a real manager (``qw run --max-jobs-per-worker``,
``--max-worker-memory``) on a real Redis: every job runs exactly once, the workers are
replaced as they reach their bound, none is taken for a crash, and the manager goes on.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest
import redis
from reliability_support import (
    ManagerProcess,
    assert_each_job_in_one_place,
    queue,
    records,
    runs,
    wait_for,
)

from qw_core.models import Job

pytestmark = [pytest.mark.redis, pytest.mark.serial]


def _ran_by_pid(record_dir: Path) -> Counter[int]:
    return Counter(int(row["pid"]) for row in records(record_dir, "ran"))


def _drain(
    url: str, client: redis.Redis, record_dir: Path, jobs: list[Job], *flags: str, workers: int = 2
) -> str:
    manager = ManagerProcess(url, "rm", *flags, record_dir=record_dir, workers=workers)
    try:
        ids = queue(url, jobs)
        wait_for(lambda: len(runs(record_dir)) == len(ids), timeout=90, what="every job to run")
        # While workers run, a job can move between the reads of a place check: wait for
        # every job's data to be gone (finished), and check each place once all is still.
        wait_for(
            lambda: not any(client.exists(f"job:{i}") for i in ids), timeout=30, what="every job to finish"
        )
        manager.signal(15)
        try:
            code = manager.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the manager did not stop within 30 s of SIGTERM; its log:\n{manager.output()}")
        assert code == 0, manager.output()
        assert set(assert_each_job_in_one_place(client, ids).values()) == {"finished"}
        assert runs(record_dir) == Counter(dict.fromkeys(ids, 1)), "every job ran exactly once"
        assert records(record_dir, "died") == [], "a recycled worker is not a crash"
        return manager.output()
    finally:
        manager.close()


def test_workers_are_replaced_every_n_jobs_and_every_job_runs_once(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    jobs = [Job.new({"n": n}) for n in range(60)]
    output = _drain(url, client, record_dir, jobs, "--max-jobs-per-worker", "5")
    per_pid = _ran_by_pid(record_dir)
    assert max(per_pid.values()) <= 5, per_pid
    assert len(per_pid) >= 12, "a new worker every 5 jobs"
    assert "ran 5 jobs (the most per worker: 5)" in output


def test_with_concurrency_a_worker_lets_its_jobs_in_flight_end_before_it_is_replaced(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    jobs = [Job.new({"n": n, "sleep": 0.05}) for n in range(40)]
    _drain(url, client, record_dir, jobs, "--max-jobs-per-worker", "6", "-c", "3")
    per_pid = _ran_by_pid(record_dir)
    assert max(per_pid.values()) <= 6, per_pid
    assert len(per_pid) >= 7
    began = Counter(int(row["pid"]) for row in records(record_dir, "began"))
    assert began == per_pid, "no job was cut off: each one that began ran to its end"


def test_a_worker_over_its_memory_bound_is_replaced_after_the_job_that_grew_it(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    before = [Job.new({"n": n}) for n in range(3)]
    grower = Job.new({"allocate": 300})
    after = [Job.new({"n": n}) for n in range(3, 6)]
    output = _drain(
        url, client, record_dir, [*before, grower, *after], "--max-worker-memory", "200", workers=1
    )
    by_job = {row["job_id"]: int(row["pid"]) for row in records(record_dir, "ran")}
    grew = by_job[grower.id]
    assert all(by_job[job.id] != grew for job in after), "its worker took nothing after it"
    assert len({by_job[job.id] for job in after}) == 1, "its replacement ran the rest"
    assert "MB of memory (the most per worker: 200 MB)" in output
