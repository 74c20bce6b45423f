"""The dashboard's pages without a browser (Starlette's test client), on the memory
backend and on fakeredis: what each shows, escaping, live regions, schedules."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import attrs
import fakeredis
import pytest
from dashboard_support import MANAGER, fail_jobs
from qwtest_postgres import fresh_schema, schema_url
from starlette.testclient import TestClient

from qw_core.broker import Broker
from qw_core.dashboard import create_app
from qw_core.memory import MemoryBroker
from qw_core.models import Failure, Job
from qw_core.schedules import Schedule
from qw_postgres.broker import PostgresBroker
from qw_redis.broker import RedisBroker

XSS = "<script>alert('qw')</script>"


@pytest.fixture(params=["memory", "fakeredis", "postgres"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The dashboard reads through the broker interface only: the same pages on each backend."""
    with contextlib.ExitStack() as stack:
        if request.param == "memory":
            found: Broker = MemoryBroker()
        elif request.param == "fakeredis":
            found = RedisBroker(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))
        else:
            found = PostgresBroker.from_url(schema_url(stack.enter_context(fresh_schema())))
        yield found
        found.close()


def _client(broker: Broker) -> TestClient:
    return TestClient(create_app(lambda: broker, close_brokers=False, stream=False))


def _scene(broker: Broker) -> dict[str, Job]:
    """A queued job, a named queue's, a delayed one, one running on a worker, a failed one."""
    queued = Job.new({"to": "ann"})
    mail = Job.new({"to": "bob"}, queue="mail")
    later = Job.new({"later": True})
    running = Job.new({"run": 1}, manager=MANAGER)
    broker.queue_jobs([queued, mail, running])
    broker.queue_jobs([later], delay=3600)
    broker.register_manager(MANAGER)
    [taken] = broker.take(manager=MANAGER, worker=f"{MANAGER}.1")
    assert taken.id == running.id
    broker.beat(
        manager=MANAGER,
        token="t",
        workers={f"{MANAGER}.1": "w"},
        ttl=30,
        running={f"{MANAGER}.1": {running.id: 1.0e9}},
    )
    broker.note_jobs_run(manager=MANAGER, count=42)
    bad = Job.new({"n": 1}, queue="reports")
    fail_jobs(broker, [bad], exc_type="builtins.KeyError")
    return {"queued": queued, "mail": mail, "later": later, "running": running, "failed": bad}


def test_the_overview_shows_queues_workers_running_jobs_and_throughput(broker: Broker) -> None:
    jobs = _scene(broker)
    with _client(broker) as client:
        page = client.get("/")
    assert page.status_code == 200
    text = page.text
    rows = dict(re.findall(r'<tr data-queue="([^"]+)">\s*<td>.*?</td>\s*<td class="num">(\d+)</td>', text))
    assert rows == {"default": "1", "mail": "1", "reports": "0", f"manager:{MANAGER}": "0"}
    assert re.search(r'id="total-running">1<', text)
    assert re.search(r'id="total-delayed">1<', text)
    assert re.search(r'id="total-failed" href="/failed">1<', text)
    assert f'<div class="manager" data-manager="{MANAGER}">' in text
    assert f"/job?id={jobs['running'].id}" in text  # what the worker runs now
    assert "<title>" in text
    assert "42 jobs</title>" in text


def test_a_queue_page_lists_its_jobs_with_their_data(broker: Broker) -> None:
    jobs = _scene(broker)
    with _client(broker) as client:
        shared = client.get("/queue", params={"name": "default"}).text
        mail = client.get("/queue", params={"name": "mail"}).text
        delayed = client.get("/queue", params={"name": "default", "kind": "delayed"}).text
    assert jobs["queued"].id in shared
    assert "&#34;ann&#34;" in shared
    assert jobs["mail"].id not in shared
    assert jobs["mail"].id in mail
    assert "&#34;bob&#34;" in mail
    assert jobs["later"].id in delayed
    assert "in 59m" in delayed


def test_a_job_page_shows_status_data_and_the_error_with_its_traceback(broker: Broker) -> None:
    jobs = _scene(broker)
    with _client(broker) as client:
        failed = client.get("/job", params={"id": jobs["failed"].id}).text
        running = client.get("/job", params={"id": jobs["running"].id}).text
        unknown = client.get("/job", params={"id": "no-such-job"}).text
    assert 'id="job-state">failed<' in failed
    assert "builtins.KeyError" in failed
    assert "Traceback ..." in failed
    assert 'id="requeue-job"' in failed
    assert 'id="delete-job"' in failed
    assert 'id="job-state">held<' in running
    assert f"{MANAGER}.1" in running
    assert 'id="job-state">unknown<' in unknown


def test_the_failed_page_filters_by_error_type_and_queue(broker: Broker) -> None:
    fail_jobs(broker, [Job.new({"v": 1}), Job.new({"v": 2}, queue="mail")], exc_type="builtins.ValueError")
    fail_jobs(broker, [Job.new({"k": 1}, queue="mail")], exc_type="builtins.KeyError")
    with _client(broker) as client:
        every = client.get("/failed").text
        values = client.get("/failed", params={"exc": "ValueError"}).text
        mail_values = client.get("/failed", params={"exc": "builtins.ValueError", "queue": "mail"}).text
        none = client.get("/failed", params={"exc": "Value"}).text  # a type's whole last part, not a piece
    assert every.count('class="pick"') == 3
    assert values.count('class="pick"') == 2
    assert "KeyError" not in values.split("<table")[1]
    assert mail_values.count('class="pick"') == 1
    assert none.count('class="pick"') == 0
    assert "No failed job matches." in none


def test_job_data_errors_and_live_regions_are_escaped(broker: Broker) -> None:
    job = Job.new({"html": XSS, XSS: [XSS]}, queue="x")
    broker.queue_jobs([job])
    bad = Job.new({"html": XSS})
    broker.queue_jobs([bad])
    [taken] = broker.take(manager=MANAGER, worker="m1.2")
    broker.fail_job(worker="m1.2", job=taken, failure=Failure(exc_type=XSS, message=XSS, traceback=XSS))
    with _client(broker) as client:
        pages = [
            client.get("/queue", params={"name": "x"}),
            client.get("/job", params={"id": job.id}),
            client.get("/job", params={"id": bad.id}),
            client.get("/failed"),
            client.get("/events", params={"view": "job", "id": bad.id}),
            client.get("/events", params={"view": "queue", "name": "x"}),
            client.get(f"/queue?name={XSS}"),  # an invalid queue name, said back in an error
            client.get("/", params={"notice": "deleted 1 failed job"}),
        ]
    notice = pages.pop()
    assert '<p class="notice" role="status">deleted 1 failed job</p>' in notice.text
    assert '<p class="notice"' not in client_get_notice(broker, XSS + " go to evil.example")
    for page in pages:
        assert "<script>alert" not in page.text, page.url
        assert "&lt;script&gt;alert(" in page.text, page.url


def client_get_notice(broker: Broker, notice: str) -> str:
    """The overview with ``?notice=``: only an action's own notices are shown."""
    with _client(broker) as client:
        return client.get("/", params={"notice": notice}).text


def test_live_regions_are_server_sent_events_of_the_regions_html(broker: Broker) -> None:
    _scene(broker)
    with _client(broker) as client:
        events = client.get("/events", params={"view": "overview"})
        assert events.headers["content-type"].startswith("text/event-stream")
        [block] = [b for b in events.text.split("\n\n") if "event: update" in b]
        digest = re.search(r"^id: (\w+)$", block, re.M)
        assert digest is not None
        html = "\n".join(line[len("data: ") :] for line in block.splitlines() if line.startswith("data: "))
        assert 'id="total-queued">' in html
        assert "<html" not in html
        # A browser that reconnects with the region it has gets nothing new ...
        again = client.get("/events", params={"view": "overview"}, headers={"last-event-id": digest.group(1)})
        assert "event: update" not in again.text or "Read " in again.text  # the region says when it was read
        unknown = client.get("/events", params={"view": "nope"})
        assert "no live view" in unknown.text


def test_schedules_say_when_none_is_declared(broker: Broker) -> None:
    with _client(broker) as client:
        page = client.get("/schedules")
    assert page.status_code == 200
    assert 'id="no-schedules"' in page.text
    assert "no running manager declares one" in page.text


def test_schedules_list_what_running_managers_declare_with_their_last_tick(broker: Broker) -> None:
    schedule = Schedule("*/5 * * * *", data={"report": "<b>daily</b>"}, id="reports", queue="emails")
    broker.declare_schedules(manager="m1", declarations={"reports": schedule.declaration()}, ttl=60)
    tick = broker.now() - 60
    broker.enqueue_tick("reports", tick, Job.new({"n": 1}, queue="emails"), manager="m1")
    with _client(broker) as client:
        page = client.get("/schedules")
    assert page.status_code == 200
    [row] = re.findall(r"<tr><td>reports.*?</tr>", page.text, flags=re.S)
    cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)
    assert cells[1:4] == ["<code>*/5 * * * *</code>", "UTC", "emails"]
    assert cells[4].startswith("in ")  # the next tick
    assert cells[5].endswith(" ago")
    assert cells[6:] == ["m1", "m1"]


def test_schedules_say_when_the_backend_keeps_none(memory: MemoryBroker) -> None:
    class NoSchedules(MemoryBroker):
        capabilities = attrs.evolve(MemoryBroker.capabilities, schedules=False)

    with _client(NoSchedules()) as client:
        page = client.get("/schedules")
    assert "this backend keeps no periodic jobs" in page.text


def test_a_page_of_a_broken_backend_says_what_went_wrong(memory: MemoryBroker) -> None:
    class Down(MemoryBroker):
        def managers(self) -> list[str]:
            from qw_core.errors import BrokerUnavailable

            raise BrokerUnavailable("Redis at redis://x:6379/0 is not answering")

    with TestClient(create_app(Down, stream=False)) as client:
        page = client.get("/")
        live = client.get("/events", params={"view": "overview"})
    assert page.status_code == 503
    assert "is not answering" in page.text
    assert "is not answering" in live.text


def test_a_live_stream_outlives_a_render_that_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that raises something unexpected costs one update (a trouble notice), not the
    stream: the next render goes out as usual."""

    class FlakyBroker(MemoryBroker):
        calls = 0

        def managers(self) -> list[str]:
            FlakyBroker.calls += 1
            if FlakyBroker.calls == 1:
                raise RuntimeError("the first read breaks")
            return super().managers()

    broker = FlakyBroker()
    monkeypatch.setattr("qw_core.dashboard.app.STREAM_FOR", 0.5)
    app = create_app(lambda: broker, close_brokers=False, stream=True, live_every=0.05)
    with TestClient(app) as client:
        events = client.get("/events", params={"view": "overview"})
    updates = [b for b in events.text.split("\n\n") if "event: update" in b]
    assert FlakyBroker.calls >= 2, "the stream rendered again after the failure"
    assert "could not render this part" in updates[0]
    assert any('id="total-queued">' in block for block in updates[1:]), updates
