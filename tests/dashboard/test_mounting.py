"""The dashboard mounted in other applications (ASGI under a path, WSGI through a2wsgi),
and ``qw dashboard``'s refusals."""

from __future__ import annotations

import sys

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from qw_cli.main import main
from qw_core.dashboard import create_app, wsgi_app
from qw_core.memory import MemoryBroker
from qw_core.models import Job


def test_mounted_under_a_path_in_an_asgi_application_its_links_stay_under_it(memory: MemoryBroker) -> None:
    memory.queue_jobs([Job.new({"n": 1}, queue="mail")])
    outer = Starlette(
        routes=[Mount("/ops/qw", create_app(lambda: memory, close_brokers=False, stream=False))]
    )
    with TestClient(outer) as client:
        page = client.get("/ops/qw/")
        queue = client.get("/ops/qw/queue", params={"name": "mail"})
        css = client.get("/ops/qw/static/dashboard.css")
    assert page.status_code == 200
    assert 'href="/ops/qw/queue?name=mail"' in page.text
    assert 'data-live="/ops/qw/events?view=overview"' in page.text
    assert 'href="/ops/qw/static/dashboard.css"' in page.text
    assert "Path=/ops/qw" in page.headers["set-cookie"]
    assert queue.status_code == 200
    assert '"n": 1' in queue.text.replace("&#34;", '"')
    assert css.status_code == 200


def test_under_wsgi_it_serves_pages_and_each_live_refresh_is_one_short_request(memory: MemoryBroker) -> None:
    memory.queue_jobs([Job.new({"n": 1})])
    app = wsgi_app(lambda: memory, close_brokers=False, live_every=1.0)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver") as client:
        page = client.get("/")
        events = client.get("/events", params={"view": "overview"})  # returns: it does not stream
    assert page.status_code == 200
    assert 'id="total-queued">1<' in page.text
    assert events.status_code == 200
    assert events.text.startswith("retry: 1000\n\n")
    assert events.text.count("event: update") == 1


def test_qw_dashboard_without_its_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "qw_core.dashboard", None)  # as if starlette were missing
    result = CliRunner().invoke(main, ["dashboard"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "qw: error: the dashboard needs its extra: pip install 'qw-core[dashboard]' "
        "(qw_core.dashboard is missing)"
    ]


def test_qw_dashboard_refuses_a_public_address_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QW_DASHBOARD_TOKEN", "QW_DASHBOARD_USER", "QW_DASHBOARD_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("qw: error: the dashboard would listen on 0.0.0.0 without authentication")
