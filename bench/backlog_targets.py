"""The targets ``backlog.py`` runs under ``qw run`` (run from ``bench/``, so ``peers`` imports).

* ``succeed``: the benchmark's no-op, ``INCR bench:done`` (as every peer's task in ``run.py``);
* ``fail``: the same, then raises, so the job goes to the failed registry;
* ``lateness``: pushes how late the job started, ``time.time() - job_data["due"]`` in
  seconds, onto ``bench:lat``; the job was queued with ``at=due``.
"""

from __future__ import annotations

import time
from typing import Any

from peers import common


class BenchFailure(Exception):
    """What ``fail`` raises."""


def succeed(job_id: str, job_data: Any) -> None:
    common.task()


def fail(job_id: str, job_data: Any) -> None:
    common.task()
    raise BenchFailure("this benchmark job always fails")


def lateness(job_id: str, job_data: Any) -> None:
    started = time.time()
    common.client().rpush(common.LATENCY, started - float(job_data["due"]))
