"""The Prometheus plugin end to end: ``qw run --metrics-port`` with two worker processes on
Redis (database 1), jobs that succeed, retry and fail, then a scrape of the endpoint."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_support import REDIS_DB, free_port, redis_url, wait_for
from prometheus_client.parser import text_string_to_metric_families
from qwtest_redis import flushed_db

from qw_cli.run import METRICS_PLUGIN
from qw_core import ConfigurationError, Job, PluginConfig, make_plugin_manager
from qw_redis.broker import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MANAGER = "metrics-test"


@pytest.fixture
def broker() -> Iterator[RedisBroker]:
    with flushed_db(REDIS_DB):
        broker = RedisBroker.from_url(redis_url(REDIS_DB))
        yield broker
        broker.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_scrape_adds_up_every_worker_process(broker: RedisBroker, tmp_path: Path) -> None:
    shared = [Job.new({"sleep": 0.1}) for _ in range(5)]  # long enough for both workers to take some
    shared += [Job.new({"fail": "once"}) for _ in range(2)]
    shared += [Job.new({"fail": "retry"})]
    shared += [Job.new({"fail": "always"}) for _ in range(3)]
    broker.queue_jobs(shared)
    broker.queue_job(Job.new({}, manager=MANAGER))
    broker.queue_job(Job.new({}), delay=600)
    broker.queue_jobs([Job.new({}, queue="emails") for _ in range(2)])  # served: --queue emails
    broker.queue_jobs([Job.new({}, queue="reports") for _ in range(3)])  # not served: they wait
    port = free_port()
    argv = [sys.executable, "-m", "qw_cli", "run", "--url", redis_url(REDIS_DB), "-w", "2", "-n", MANAGER]
    argv += [
        "--max-retries",
        "1",
        "--retry-backoff",
        "50ms",
        "--retry-jitter",
        "0",
        "--metrics-port",
        str(port),
        "--queue",
        "default",
        "--queue",
        "emails",
    ]
    log = tmp_path / "qw-run.log"
    with log.open("w") as out:
        process = subprocess.Popen([*argv, "qwtest_targets.retrying:flaky"], stdout=out, stderr=out)
    try:
        expected = {
            ("qw_jobs_started_total", "shared"): 17.0,
            ("qw_jobs_succeeded_total", "shared"): 8.0,
            ("qw_jobs_retried_total", "shared"): 6.0,
            ("qw_jobs_failed_total", "shared"): 3.0,
            ("qw_job_duration_seconds_count", "shared"): 17.0,
            ("qw_jobs_started_total", MANAGER): 1.0,
            ("qw_jobs_succeeded_total", MANAGER): 1.0,
            ("qw_jobs_succeeded_total", "emails"): 2.0,
        }

        def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            if process.poll() is not None:
                pytest.fail(f"qw run exited with {process.returncode}:\n{log.read_text()}")
            try:
                samples = scrape(port)
            except OSError:
                return None  # not serving yet
            seen = {key: value(samples, key[0], queue=key[1]) for key in expected}
            return samples if seen == expected and value(samples, "qw_failed_jobs") == 3 else None

        samples = wait_for(settled, timeout=30, what=f"the metrics to add up ({log})")
        assert value(samples, "qw_workers", queue=MANAGER) == 2
        assert value(samples, "qw_queue_jobs", queue="shared", state="delayed") == 1
        assert value(samples, "qw_queue_jobs", queue="shared", state="queued") == 0
        assert value(samples, "qw_queue_jobs", queue=MANAGER, state="in_progress") == 0
        assert value(samples, "qw_queue_jobs", queue="emails", state="queued") == 0
        assert value(samples, "qw_queue_jobs", queue="reports", state="queued") == 3
        buckets = value(samples, "qw_job_duration_seconds_bucket", queue="shared", le="+Inf")
        assert buckets == 17
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    text = log.read_text()
    assert code == 0, text
    ran_on = set(re.findall(rf"job \S+ \w+ on ({MANAGER}\.\d+)", text))
    assert len(ran_on) == 2, f"both worker processes ran jobs: {ran_on}"
    (directory,) = re.findall(r"worker values in (\S+)\)", text)
    assert not Path(directory).exists(), "the multiprocess directory is removed on exit"


@pytest.mark.parametrize("port", ["9451", -1, 70000, True])
def test_an_invalid_port_setting_is_refused_at_start(port: object) -> None:
    config = PluginConfig(entry_points=False, modules=(METRICS_PLUGIN,), options={"prometheus.port": port})
    with pytest.raises(ConfigurationError, match=r"prometheus\.port"):
        make_plugin_manager(config)
