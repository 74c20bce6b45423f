"""The dashboard in a real browser (Debian's Chromium, driven by Selenium through
/usr/bin/chromedriver) against ``qw dashboard`` and a ``qw run`` manager, both real
subprocesses, over the test process's private redis-server.

What a user does: open the overview and see a queued job appear without reloading; open
a failed job, requeue it and see it run; and what an attacker tries: markup in job data
and errors, and a form on another site that posts to the dashboard. A screenshot of each
page is kept in ``test-artifacts/dashboard/`` (``QW_TEST_ARTIFACTS`` elsewhere).

``.ci/run`` installs Chromium; a machine without it fails here, saying so (never skips).
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from qwtest_redis import flushed_db, free_port, redis_url
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from qw_core.models import Job, State
from qw_redis.broker import RedisBroker

pytestmark = pytest.mark.slow

REDIS_DB = 4
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("QW_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
XSS_DATA = "<img src=x onerror=\"window.qwXss='data'\"><script>window.qwXss='data'</script>"
XSS_ERROR = "<script>window.qwXss='error'</script> went wrong"

_T = TypeVar("_T")


def wait_for(what: str, check: Callable[[], _T | None], timeout: float = 20.0) -> _T:
    """``check()``'s first true answer, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def text(driver: WebDriver, css: str) -> str:
    """The text of the first element ``css`` selects, read in one step in the page (a live
    region may replace the element between two WebDriver calls); ``""`` if there is none."""
    found = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css
    )
    return str(found)


def click(driver: WebDriver, css: str) -> None:
    """Click the element ``css`` selects, again if a live update replaced it meanwhile."""
    deadline = time.monotonic() + 10
    while True:
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class _Process:
    """A ``qw`` subprocess, its output in a file (read on failure)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}  # no credentials, no QW_URL
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "qw_cli", *argv], stdout=self._out, stderr=subprocess.STDOUT, env=env
        )

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._out.close()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with flushed_db(REDIS_DB):
        yield redis_url(REDIS_DB)


@pytest.fixture(scope="module")
def broker(url: str) -> Iterator[RedisBroker]:
    broker = RedisBroker.from_url(url)
    yield broker
    broker.close()


@pytest.fixture(scope="module")
def dashboard(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``qw dashboard`` on a free port; its base URL."""
    port = free_port()
    logs = tmp_path_factory.mktemp("dashboard")
    process = _Process(["dashboard", "--url", url, "--port", str(port)], logs / "dashboard.log")
    try:
        wait_for("the dashboard to listen", lambda: _listening(port) or process.popen.poll() is not None)
        assert process.popen.poll() is None, process.output()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture(scope="module")
def manager(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Process]:
    """A ``qw run`` manager with one worker on the shared queue, keeping results."""
    logs = tmp_path_factory.mktemp("manager")
    process = _Process(
        [
            "run",
            "--url",
            url,
            "-n",
            "dash",
            "-w",
            "1",
            "--heartbeat",
            "1s",
            "--result-ttl",
            "10m",
            "qwtest_targets.dashboard:gated",
        ],
        logs / "manager.log",
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    for needed in (CHROMIUM, CHROMEDRIVER):
        assert needed.exists(), (
            f"{needed} is missing: apt-get install chromium chromium-driver (.ci/run does)"
        )
    # Selenium Manager must never download a browser or a driver: both are given by path.
    saved = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"qw-chromium-{os.getpid()}"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        if saved is None:
            del os.environ["SE_OFFLINE"]
        else:
            os.environ["SE_OFFLINE"] = saved


def screenshot(driver: WebDriver, name: str) -> None:
    """Keep a PNG of the whole page as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(700, min(int(height) + 120, 2400)))
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    driver.set_window_size(1280, 900)


def _failed_job(broker: RedisBroker, manager: _Process, gate: Path) -> Job:
    """A job the real manager ran and failed (its error holds markup), waited for."""
    gate.write_text("closed")
    job = Job.new({"gate": str(gate), "error": XSS_ERROR, "returns": {"ok": True}, "note": XSS_DATA})
    broker.queue_jobs([job])
    wait_for(
        "the job to fail",
        lambda: broker.job_status(job.id).state is State.FAILED or manager.popen.poll() is not None,
    )
    assert manager.popen.poll() is None, manager.output()
    return job


def test_the_overview_shows_a_queued_job_appear_without_a_reload(
    dashboard: str, broker: RedisBroker, browser: WebDriver, manager: _Process
) -> None:
    browser.get(dashboard + "/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    wait_for(
        "the manager on the page", lambda: browser.find_elements(By.CSS_SELECTOR, '[data-manager="dash"]')
    )
    browser.execute_script("window.qwSamePage = 'still here'")
    assert not browser.find_elements(By.CSS_SELECTOR, 'tr[data-queue="arrivals"]')
    broker.queue_jobs([Job.new({"hello": "world"}, queue="arrivals")])  # a queue nobody serves

    wait_for(
        "the queued job on the overview", lambda: text(browser, 'tr[data-queue="arrivals"] td.num') == "1"
    )
    assert browser.execute_script("return window.qwSamePage") == "still here", "the page was not reloaded"
    navigations = browser.execute_script("return performance.getEntriesByType('navigation').length")
    assert navigations == 1
    wait_for("the chart", lambda: browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar"))
    screenshot(browser, "overview")

    click(browser, 'tr[data-queue="arrivals"] a')
    wait_for("the queue page", lambda: "Queue" in browser.find_element(By.TAG_NAME, "h1").text)
    assert '{"hello": "world"}' in text(browser, "td.data")
    screenshot(browser, "queue")


def test_a_failed_job_is_requeued_from_its_page_and_runs(
    dashboard: str, broker: RedisBroker, browser: WebDriver, manager: _Process, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    job = _failed_job(broker, manager, gate)
    browser.get(dashboard + "/failed")
    wait_for(
        "the failed job listed",
        lambda: browser.find_elements(By.CSS_SELECTOR, f'input.pick[value="{job.id}"]'),
    )
    screenshot(browser, "failed")
    click(browser, f'a[href="/job?id={job.id}"]')  # a click may return before the page loads
    wait_for("the job's page", lambda: text(browser, "#job-state") == "failed")
    # Markup in the data and in the error shows as text, and runs nowhere.
    assert XSS_ERROR in text(browser, "p.error")
    assert "<script>window.qwXss='data'</script>" in text(browser, "#job-data")
    assert browser.execute_script("return window.qwXss === undefined")
    assert browser.execute_script("return document.querySelectorAll('main script, main img').length") == 0
    screenshot(browser, "job-failed")

    gate.unlink()  # the next run succeeds
    click(browser, "#requeue-job")
    wait_for("the confirmation page", lambda: text(browser, "h1") == "Requeue 1 failed job?")
    screenshot(browser, "confirm")
    browser.find_element(By.ID, "confirm").click()
    wait_for(
        "the job page again, with its notice", lambda: "requeued 1 failed job" in text(browser, "p.notice")
    )
    browser.execute_script("window.qwSamePage = 'still here'")
    wait_for("the job to run", lambda: text(browser, "#job-state") == "succeeded", timeout=30)
    assert browser.execute_script("return window.qwSamePage") == "still here"
    assert '"ok": true' in text(browser, "#job-result")
    assert broker.get_result(job.id) is not None
    screenshot(browser, "job-succeeded")


def test_a_form_on_another_site_cannot_act_on_the_dashboard(
    dashboard: str, broker: RedisBroker, browser: WebDriver, manager: _Process, tmp_path: Path
) -> None:
    job = _failed_job(broker, manager, tmp_path / "gate")
    browser.get(dashboard + "/failed")  # the browser holds the dashboard's cookies
    attack = f"""<!doctype html><form id=f method=post action="{dashboard}/failed/action">
    <input name=do value="delete:all"><input name=confirmed value=1><input name=csrf value=guess></form>
    <script>document.getElementById('f').submit()</script>"""

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = attack.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        wait_for(
            "the forged post's answer", lambda: "refused" in browser.find_element(By.TAG_NAME, "body").text
        )
        assert "another site" in browser.find_element(By.TAG_NAME, "body").text
    finally:
        server.shutdown()
        server.server_close()
    assert broker.job_status(job.id).state is State.FAILED, "nothing was deleted"


def test_every_page_renders_in_the_browser(
    dashboard: str, broker: RedisBroker, browser: WebDriver, manager: _Process, tmp_path: Path
) -> None:
    broker.queue_jobs([Job.new({"report": n}, queue="reports") for n in range(3)], delay=900)
    # Some work for the throughput chart: jobs that succeed, counted by the heartbeat.
    broker.queue_jobs([Job.new({"gate": str(tmp_path / "open"), "error": "", "n": n}) for n in range(300)])
    begun = lambda: sum(entry.counts.get("dash", 0) for entry in broker.jobs_run(minutes=15))  # noqa: E731
    wait_for("the jobs to be counted", lambda: begun() >= 300, timeout=30)
    browser.get(dashboard + "/")
    wait_for("the chart's bars", lambda: browser.find_elements(By.CSS_SELECTOR, "svg.chart text.peak"))
    screenshot(browser, "overview-busy")
    for name, path, heading in (
        ("delayed", "/delayed", "Delayed jobs"),
        ("schedules", "/schedules", "Schedules"),
    ):
        browser.get(dashboard + path)
        assert browser.find_element(By.TAG_NAME, "h1").text == heading
        screenshot(browser, name)
    assert "No schedules" in browser.find_element(By.ID, "no-schedules").text  # none declared
    browser.get(dashboard + "/delayed?name=reports")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#delayed tbody tr")) == 3
