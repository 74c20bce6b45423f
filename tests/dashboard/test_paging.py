"""Pages stay bounded however deep the queues and the failed registry: each reads one
range of each listing it shows (counted here by a broker that counts what it is asked),
and the failed registry's filters and "all matching" actions walk it in chunks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dashboard_support import Counting, csrf_token, fail_jobs, post
from starlette.testclient import TestClient

from qw_core.dashboard import create_app, failed, reads
from qw_core.memory import MemoryBroker
from qw_core.models import Job, State

QUEUED = 100_000
FAILED = 10_000


@pytest.fixture(scope="module")
def deep() -> Iterator[MemoryBroker]:
    """100,000 queued jobs on the shared queue and 10,000 in the failed registry (a
    fifth of them KeyErrors on queue ``mail``), shared by the read-only tests here."""
    broker = MemoryBroker()
    fail_jobs(broker, [Job.new({"f": n}) for n in range(FAILED - FAILED // 5)])
    fail_jobs(
        broker, [Job.new({"k": n}, queue="mail") for n in range(FAILED // 5)], exc_type="builtins.KeyError"
    )
    broker.queue_jobs([Job.new({"n": n}) for n in range(QUEUED)])
    yield broker
    broker.close()


def _counted(broker: MemoryBroker, read_only: bool = True) -> tuple[Counting, TestClient]:
    counting = Counting(broker)
    app = create_app(lambda: counting, close_brokers=False, stream=False, read_only=read_only)  # type: ignore[arg-type, return-value]
    return counting, TestClient(app)


def _limits(counting: Counting) -> list[Any]:
    return [kw.get("limit") for _, kw in counting.listings]


def test_a_page_deep_in_a_queue_of_100000_reads_one_page_of_it(deep: MemoryBroker) -> None:
    counting, client = _counted(deep)
    with client:
        page = client.get("/queue", params={"name": "default", "offset": 60_000})
    assert page.status_code == 200
    assert counting.listings == [("queued_job_ids", {"queue": None, "offset": 60_000, "limit": reads.PAGE})]
    assert counting.calls["get_job"] == reads.PAGE  # the page's jobs, one each
    assert "jobs 60,001 to 60,050 shown" in page.text
    assert "100,000" in page.text


def test_the_overview_counts_without_listing(deep: MemoryBroker) -> None:
    counting, client = _counted(deep)
    with client:
        page = client.get("/")
    assert page.status_code == 200
    assert counting.listings == []
    assert 'id="total-queued">100,000<' in page.text
    assert 'id="total-failed" href="/failed">10,000<' in page.text


def test_a_page_of_10000_failed_jobs_reads_one_range(deep: MemoryBroker) -> None:
    counting, client = _counted(deep)
    with client:
        page = client.get("/failed", params={"offset": 9_000})
    assert page.status_code == 200
    assert counting.listings == [("failed_jobs_page", {"offset": 9_000, "limit": failed.PAGE + 1})]
    assert page.text.count('class="pick"') == 0  # read-only
    assert page.text.count("/job?id=") == failed.PAGE


def test_a_filtered_page_walks_the_registry_in_chunks(deep: MemoryBroker) -> None:
    counting, client = _counted(deep)
    with client:
        page = client.get("/failed", params={"exc": "KeyError", "offset": 100})
    assert page.status_code == 200
    assert set(_limits(counting)) == {failed.CHUNK}
    assert "failed_jobs" not in counting.calls
    assert page.text.count("/job?id=") == failed.PAGE
    assert "KeyError" in page.text
    assert "ValueError" not in page.text.split("<tbody>")[1]


def test_requeueing_every_matching_failed_job_walks_in_chunks_and_misses_none() -> None:
    broker = MemoryBroker()
    fail_jobs(broker, [Job.new({"v": n}) for n in range(1_200)])
    keys = [Job.new({"k": n}, queue="mail") for n in range(1_300)]
    fail_jobs(broker, keys, exc_type="builtins.KeyError")
    fail_jobs(broker, [Job.new({"v": n}) for n in range(700)])  # newer than the KeyErrors
    counting, client = _counted(broker, read_only=False)
    with client:
        asked = post(client, "/failed/action", {"do": "requeue:all", "exc": "KeyError", "queue": "mail"})
        assert "Requeue 1,300 failed jobs?" in asked.text
        done = post(
            client,
            "/failed/action",
            {"do": "requeue:all", "exc": "KeyError", "queue": "mail", "confirmed": "1"},
        )
    assert done.status_code == 303
    assert "requeued+1300+failed+jobs" in done.headers["location"]
    assert broker.failed_count() == 1_900
    assert broker.queued_count(queue="mail") == 1_300
    assert {job.id for job in keys} == set(broker.queued_job_ids(queue="mail"))
    assert set(_limits(counting)) == {failed.CHUNK}
    assert "failed_jobs" not in counting.calls


def test_deleting_every_matching_failed_job_keeps_the_others() -> None:
    broker = MemoryBroker()
    values = [Job.new({"v": n}) for n in range(1_100)]
    fail_jobs(broker, values)
    fail_jobs(broker, [Job.new({"k": n}) for n in range(900)], exc_type="builtins.KeyError")
    assert failed.delete_matching(broker, failed.Filter(exc_type="KeyError")) == 900
    assert broker.failed_count() == 1_100
    assert {entry.job.id for entry in broker.failed_jobs(limit=2_000)} == {job.id for job in values}


def test_requeue_or_delete_a_selection_and_all_unfiltered(client: TestClient, memory: MemoryBroker) -> None:
    jobs = [Job.new({"n": n}) for n in range(5)]
    fail_jobs(memory, jobs)
    csrf_token(client)
    picked = {"do": "requeue:selected", "id": [jobs[0].id, jobs[1].id], "confirmed": "1"}
    assert post(client, "/failed/action", picked).status_code == 303
    assert [memory.job_status(job.id).state for job in jobs[:3]] == [State.QUEUED, State.QUEUED, State.FAILED]
    assert (
        post(
            client, "/failed/action", {"do": "delete:selected", "id": jobs[2].id, "confirmed": "1"}
        ).status_code
        == 303
    )
    assert memory.job_status(jobs[2].id).state is State.UNKNOWN
    answer = post(client, "/failed/action", {"do": "delete:all", "confirmed": "1"})
    assert "deleted+2+failed+jobs" in answer.headers["location"]
    assert memory.failed_count() == 0
    assert post(client, "/failed/action", {"do": "delete:selected", "confirmed": "1"}).status_code == 400
    assert post(client, "/failed/action", {"do": "explode:all", "confirmed": "1"}).status_code == 400
