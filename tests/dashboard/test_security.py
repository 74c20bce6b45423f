"""The dashboard is safe by default: authentication, CSRF and origin checks on every
action, read-only mode, security headers, and refusing a public address without auth."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from dashboard_support import ORIGIN, csrf_token, fail_jobs, post
from starlette.testclient import TestClient

from qw_core.dashboard import Auth, check_host, create_app, is_loopback
from qw_core.errors import ConfigurationError
from qw_core.memory import MemoryBroker
from qw_core.models import Job, State


@pytest.fixture
def failed_id(memory: MemoryBroker) -> str:
    job = Job.new({"n": 1})
    fail_jobs(memory, [job])
    return job.id


def _requeue(job_id: str) -> dict[str, str]:
    return {"do": "requeue:selected", "id": job_id, "confirmed": "1", "back": "/failed"}


# -- CSRF and origin ----------------------------------------------------------------------


def test_a_confirmed_action_with_its_token_from_the_dashboard_itself_is_done(
    client: TestClient, memory: MemoryBroker, failed_id: str
) -> None:
    answer = post(client, "/failed/action", _requeue(failed_id))
    assert answer.status_code == 303
    assert answer.headers["location"] == "/failed?notice=requeued+1+failed+job"
    assert memory.job_status(failed_id).state is State.QUEUED


@pytest.mark.parametrize(
    ("token", "headers", "why"),
    [
        (None, {"origin": ORIGIN}, "CSRF token"),
        ("forged", {"origin": ORIGIN}, "CSRF token"),
        ("right", {"origin": "https://evil.example"}, "another site"),
        ("right", {"referer": "https://evil.example/page"}, "another site"),
        ("right", {"origin": "null"}, "opaque origin"),
    ],
)
def test_a_post_without_the_right_token_or_from_another_site_is_refused(
    client: TestClient,
    memory: MemoryBroker,
    failed_id: str,
    *,
    token: str | None,
    headers: dict[str, str],
    why: str,
) -> None:
    real = csrf_token(client)
    data = _requeue(failed_id)
    if token is not None:
        data["csrf"] = real if token == "right" else token
    answer = client.post("/failed/action", data=data, headers=headers, follow_redirects=False)
    assert answer.status_code == 403
    assert why in answer.text
    assert memory.job_status(failed_id).state is State.FAILED, "nothing was done"


def test_an_action_goes_back_only_to_a_page_of_the_dashboard(
    client: TestClient, memory: MemoryBroker, failed_id: str
) -> None:
    for back in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        answer = post(client, "/failed/action", {**_requeue(failed_id), "back": back})
        assert answer.headers["location"].startswith("/failed?notice="), back


def test_a_post_that_is_not_a_form_is_refused(
    client: TestClient, memory: MemoryBroker, failed_id: str
) -> None:
    answer = client.post(
        "/failed/action", json=_requeue(failed_id) | {"csrf": csrf_token(client)}, headers={"origin": ORIGIN}
    )
    assert answer.status_code == 400
    assert memory.job_status(failed_id).state is State.FAILED


def test_the_csrf_cookie_is_strict_and_out_of_scripts_reach(memory: MemoryBroker) -> None:
    with TestClient(create_app(lambda: memory, close_brokers=False, stream=False)) as client:
        cookie = client.get("/").headers["set-cookie"]
    assert cookie.startswith("qw_csrf=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


def test_an_action_asks_for_confirmation_first(
    client: TestClient, memory: MemoryBroker, failed_id: str
) -> None:
    data = _requeue(failed_id)
    del data["confirmed"]
    answer = post(client, "/failed/action", data)
    assert answer.status_code == 200
    assert "Requeue 1 failed job?" in answer.text
    assert 'name="confirmed" value="1"' in answer.text
    assert memory.job_status(failed_id).state is State.FAILED


def test_every_response_forbids_inline_scripts_and_framing(client: TestClient) -> None:
    for path in ("/", "/failed", "/static/dashboard.css", "/nope"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"


# -- read-only ----------------------------------------------------------------------------


def test_read_only_shows_no_action_and_refuses_every_one(memory: MemoryBroker, failed_id: str) -> None:
    with TestClient(create_app(lambda: memory, close_brokers=False, stream=False, read_only=True)) as client:
        job = client.get("/job", params={"id": failed_id}).text
        listing = client.get("/failed").text
        answer = post(client, "/failed/action", _requeue(failed_id))
    assert "read-only" in job
    assert "<button" not in job
    assert "/failed/action" not in job
    assert "/failed/action" not in listing
    assert 'class="pick"' not in listing
    assert answer.status_code == 403
    assert memory.job_status(failed_id).state is State.FAILED


# -- authentication -----------------------------------------------------------------------


@pytest.fixture
def token_client(memory: MemoryBroker) -> Iterator[TestClient]:
    app = create_app(lambda: memory, close_brokers=False, stream=False, auth=Auth(token="s3cret-token"))
    with TestClient(app) as client:
        yield client


def test_a_token_is_asked_for_by_the_login_page_or_a_bearer_header(token_client: TestClient) -> None:
    answer = token_client.get("/failed?exc=E", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Ffailed%3Fexc%3DE"
    assert token_client.get("/events", params={"view": "overview"}).status_code == 401
    assert (
        token_client.get("/", headers={"authorization": "Bearer wrong"}, follow_redirects=False).status_code
        == 303
    )
    assert token_client.get("/", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
    assert token_client.get("/static/dashboard.js").status_code == 200  # no secret in it


def test_logging_in_with_the_token_opens_every_page(token_client: TestClient) -> None:
    login = token_client.get("/login", params={"next": "/failed"})
    assert login.status_code == 200
    assert 'name="token"' in login.text
    wrong = post(token_client, "/login", {"token": "nope", "next": "/failed"})
    assert wrong.status_code == 401
    assert "not the token" in wrong.text
    assert "qw_dashboard_session" not in token_client.cookies
    right = post(token_client, "/login", {"token": "s3cret-token", "next": "/failed"})
    assert right.status_code == 303
    assert right.headers["location"] == "/failed"
    assert "HttpOnly" in right.headers["set-cookie"]
    assert "SameSite=strict" in right.headers["set-cookie"]
    assert token_client.get("/", follow_redirects=False).status_code == 200


def test_the_login_does_not_send_anyone_to_another_site(token_client: TestClient) -> None:
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        answer = post(token_client, "/login", {"token": "s3cret-token", "next": target})
        assert answer.headers["location"] == "/", target


def test_the_login_form_is_checked_against_cross_site_posts(token_client: TestClient) -> None:
    answer = token_client.post("/login", data={"token": "s3cret-token"}, follow_redirects=False)
    assert answer.status_code == 403
    assert "qw_dashboard_session" not in token_client.cookies


def _basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_wants_the_right_user_and_password(memory: MemoryBroker) -> None:
    app = create_app(
        lambda: memory, close_brokers=False, stream=False, auth=Auth(user="ops", password="pa:ss")
    )
    with TestClient(app) as client:
        asked = client.get("/")
        assert asked.status_code == 401
        assert asked.headers["www-authenticate"].startswith("Basic ")
        assert client.get("/", headers=_basic("ops", "pa:ss")).status_code == 200
        assert client.get("/", headers=_basic("ops", "pa:sS")).status_code == 401
        assert client.get("/", headers=_basic("root", "pa:ss")).status_code == 401
        assert client.get("/", headers={"authorization": "Basic !!!"}).status_code == 401
        assert client.get("/login").status_code == 404  # no token: nothing to log in with


def test_credentials_come_from_the_environment() -> None:
    assert Auth.from_env({}) == Auth()
    assert not Auth.from_env({"QW_DASHBOARD_TOKEN": ""}).required
    both = Auth.from_env({"QW_DASHBOARD_TOKEN": "t", "QW_DASHBOARD_USER": "u", "QW_DASHBOARD_PASSWORD": "p"})
    assert both.allows("Bearer t", None)
    assert both.allows("Basic " + base64.b64encode(b"u:p").decode(), None)
    assert "t" not in repr(both).replace("token", "") or "p" not in repr(both)
    with pytest.raises(ConfigurationError, match="both"):
        Auth.from_env({"QW_DASHBOARD_USER": "u"})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_a_loopback_address_needs_no_credentials(host: str) -> None:
    assert is_loopback(host)
    check_host(host, Auth())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.4", "example.com"])
def test_any_other_address_needs_credentials(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigurationError, match="without authentication"):
        check_host(host, Auth())
    check_host(host, Auth(token="t"))
