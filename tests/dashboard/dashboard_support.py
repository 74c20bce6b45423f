"""Helpers for the dashboard's tests: a client with a CSRF token, filled brokers, and a
broker that counts what the dashboard reads."""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.testclient import TestClient

from qw_core.broker import Broker
from qw_core.models import Failure, Job
from qw_core.policy import FailedLimits

#: No trimming of the registry while a test fills it (the memory backend's age check reads it whole).
UNLIMITED = FailedLimits(max_count=None, max_age=None)

#: What the test client sends as its origin (its host is ``testserver``).
ORIGIN = "http://testserver"
MANAGER = "m1"


def csrf_token(client: TestClient) -> str:
    """The client's CSRF token (the cookie the first page sets)."""
    if "qw_csrf" not in client.cookies:
        assert client.get("/schedules").status_code == 200
    return str(client.cookies["qw_csrf"])


def post(client: TestClient, path: str, data: dict[str, Any], **kw: Any) -> Any:
    """A form POST as the dashboard's own pages send it: its token, its origin."""
    headers = {"origin": ORIGIN, **kw.pop("headers", {})}
    return client.post(
        path, data={"csrf": csrf_token(client), **data}, headers=headers, follow_redirects=False, **kw
    )


def fail_jobs(
    broker: Broker, jobs: list[Job], exc_type: str = "builtins.ValueError", *, worker: str = "m1.9"
) -> None:
    """Queue ``jobs`` and fail each (the first is the oldest failure)."""
    broker.queue_jobs(jobs)
    left = list(jobs)
    while left:
        taken = broker.take(manager=MANAGER, worker=worker, limit=100, queues=_queues(left))
        assert taken, "every job is taken"
        failures = [
            (job, Failure(exc_type=exc_type, message=f"failed {job.id}", traceback="Traceback ..."))
            for job in taken
        ]
        assert all(broker.fail_jobs(worker=worker, failures=failures, limits=UNLIMITED))
        done = {job.id for job in taken}
        left = [job for job in left if job.id not in done]


def _queues(jobs: list[Job]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(job.queue or "default" for job in jobs))


class Counting:
    """A broker that counts each method called, and keeps the arguments of the listings."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.calls: Counter[str] = Counter()
        self.listings: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._broker, name)
        if not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if name.endswith("_job_ids") or name in ("failed_jobs", "failed_jobs_page"):
                self.listings.append((name, kwargs))
            return found(*args, **kwargs)

        return call
