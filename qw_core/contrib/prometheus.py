"""Prometheus metrics for qw, as an opt-in plugin on the public hooks.

Enable it with ``qw run --metrics-port 9451`` (which loads this module and serves on that
port), with ``qw run -p qw_core.contrib.prometheus`` (default port :data:`DEFAULT_PORT`), or
through the ``qw`` entry point of a package of your own. It needs ``prometheus_client``:
``pip install 'qw-core[prometheus]'``.

What it exports (every job metric is labelled ``queue``: ``shared`` or a manager's name):

==================================  =========  =========================================
``qw_jobs_started_total``           counter    runs of a job's target that began
``qw_jobs_succeeded_total``         counter    runs whose target returned
``qw_jobs_failed_total``            counter    runs that ended in the failed registry
``qw_jobs_retried_total``           counter    runs that ended in a retry
``qw_job_duration_seconds``         histogram  how long the target ran, by queue
``qw_queue_jobs``                   gauge      jobs by ``queue`` and ``state``: ``queued``
                                               and ``delayed`` for the shared queue and
                                               this manager's queue, ``in_progress`` held by
                                               this manager's workers
``qw_failed_jobs``                  gauge      jobs in the failed registry (all queues)
``qw_workers``                      gauge      this manager's live workers
==================================  =========  =========================================

Across processes. Jobs run in worker processes, but the manager serves the metrics. The
counters and the histogram use prometheus_client's multiprocess mode: in
``qw_manager_starting``, before any worker exists, the plugin makes a fresh directory for
this manager and sets ``PROMETHEUS_MULTIPROC_DIR`` to it, so every worker (forked or
spawned, and every replacement) writes its values to its own files there, and the
manager's server adds them up at each scrape. Counts of a worker that died stay counted.
The gauges are read from the broker at scrape time, in the manager, so they are never
stale and need no cross-process state at all. The directory is deleted when the manager
process exits.

prometheus_client chooses how values are stored when it is first imported; if something
imported it before the directory existed (the plugin itself, or the user's target), the
plugin switches it to multiprocess storage before creating any metric (see
:func:`_use_multiprocess_values`). One metrics-serving manager per process.

Settings (``qw run -o NAME=VALUE``): ``prometheus.port`` (default :data:`DEFAULT_PORT`;
``0`` picks a free port, logged at start), ``prometheus.addr`` (default ``0.0.0.0``).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        f"qw_core.contrib.prometheus needs prometheus_client: pip install 'qw-core[prometheus]' ({exc})"
    ) from exc

from qw_core.errors import ConfigurationError
from qw_core.models import Job, ManagerInfo, Outcome, WorkerInfo
from qw_core.plugins import hookimpl

if TYPE_CHECKING:
    from qw_core.broker import Broker, BrokerFactory, Inspector
    from qw_core.plugins import PluginConfig

log = logging.getLogger("qw.prometheus")

#: The port served when none is configured.
DEFAULT_PORT = 9451
#: The environment variable prometheus_client's multiprocess mode reads.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How the shared queue is labelled.
SHARED = "shared"

_settings: dict[str, Any] = {"port": DEFAULT_PORT, "addr": "0.0.0.0"}
_server: Any = None
_job_metrics: _JobMetrics | None = None


# -- settings (any process) ---------------------------------------------------------------


@hookimpl
def qw_plugins_loaded(config: PluginConfig) -> None:
    port = config.options.get("prometheus.port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigurationError(f"prometheus.port must be a port number (0 to 65535), not {port!r}")
    _settings["port"] = port
    _settings["addr"] = str(config.options.get("prometheus.addr", "0.0.0.0"))


# -- manager process: the directory, the server, the gauges --------------------------------


@hookimpl
def qw_manager_starting(manager: ManagerInfo, broker: Broker) -> None:
    global _server  # one server per process, as prometheus_client has it
    directory = tempfile.mkdtemp(prefix=f"qw-metrics-{manager.name}-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = directory  # inherited by every worker started after this
    _use_multiprocess_values()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]  # untyped upstream
    registry.register(QueueCollector(broker.factory(), manager.name))
    _server, _thread = start_http_server(_settings["port"], addr=_settings["addr"], registry=registry)
    host, port = _server.server_address[:2]
    log.info(
        "manager %s serves Prometheus metrics on http://%s:%d/metrics (worker values in %s)",
        manager.name,
        host,
        port,
        directory,
    )


@hookimpl
def qw_manager_stopping(manager: ManagerInfo) -> None:
    global _server  # noqa: PLW0603 - see qw_manager_starting
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None


class QueueCollector(Collector):
    """The gauges, read from the broker at each scrape (in the manager's server thread).

    :param factory: opens the broker this collector reads with (one, kept open).
    :param manager: the manager whose queue and workers are reported.
    """

    def __init__(self, factory: BrokerFactory, manager: str) -> None:
        self._factory = factory
        self._manager = manager
        self._broker: Inspector | None = None
        self._lock = threading.Lock()  # scrapes may come on several threads; a broker serves one

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                yield from self._collect()
            except Exception:  # a scrape must not fail because the broker did
                log.warning("cannot read queue depths from the broker", exc_info=True)
                self._broker = None

    def _collect(self) -> Iterator[Metric]:
        broker = self._broker = self._broker or self._factory()
        manager = self._manager
        depth = GaugeMetricFamily("qw_queue_jobs", "Jobs by queue and state.", labels=["queue", "state"])
        for queue, label in ((None, SHARED), (manager, manager)):
            depth.add_metric([label, "queued"], broker.queued_count(queue))
            depth.add_metric([label, "delayed"], broker.delayed_count(queue))
        for named in broker.named_queues():
            depth.add_metric([named, "queued"], broker.queued_count(queue=named))
            depth.add_metric([named, "delayed"], broker.delayed_count(queue=named))
        workers = broker.workers(manager)
        held = sum(broker.held_count(worker) for worker in workers)
        depth.add_metric([manager, "in_progress"], held)
        yield depth
        yield GaugeMetricFamily(
            "qw_failed_jobs", "Jobs in the failed-job registry.", value=broker.failed_count()
        )
        live = GaugeMetricFamily("qw_workers", "Live workers of this manager.", labels=["queue"])
        live.add_metric([manager], len(workers))
        yield live


def _use_multiprocess_values() -> None:
    """Make metrics created from now on store their values in the multiprocess directory.

    prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` once, when first imported, and
    keeps the choice in ``values.ValueClass``; the directory is made later than that.
    """
    if os.environ.get(MULTIPROC_ENV) and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # untyped upstream


# -- worker processes: the job counters ----------------------------------------------------


class _JobMetrics:
    """The counters and histogram one worker process writes (not registered anywhere: the
    manager's collector reads them from the multiprocess directory)."""

    def __init__(self) -> None:
        labels = ["queue"]
        self.started = Counter("qw_jobs_started", "Job runs started.", labels, registry=None)
        self.succeeded = Counter("qw_jobs_succeeded", "Job runs that succeeded.", labels, registry=None)
        self.failed = Counter("qw_jobs_failed", "Job runs that failed for good.", labels, registry=None)
        self.retried = Counter("qw_jobs_retried", "Job runs that were retried.", labels, registry=None)
        self.duration = Histogram("qw_job_duration_seconds", "Job run time.", labels, registry=None)


def _metrics() -> _JobMetrics:
    global _job_metrics  # noqa: PLW0603 - one set per process, created on first use
    if _job_metrics is None:
        _use_multiprocess_values()
        _job_metrics = _JobMetrics()
    return _job_metrics


def _queue(job: Job, worker: WorkerInfo) -> str:
    if job.queue is not None:
        return job.queue
    if job.manager is not None:
        return job.manager
    return SHARED if job.worker is None else worker.manager


@hookimpl
def qw_worker_started(worker: WorkerInfo) -> None:
    _metrics()


@hookimpl
def qw_job_started(job: Job, worker: WorkerInfo) -> None:
    _metrics().started.labels(_queue(job, worker)).inc()


@hookimpl
def qw_job_finished(job: Job, worker: WorkerInfo, outcome: Outcome, duration: float) -> None:
    metrics, queue = _metrics(), _queue(job, worker)
    counter = {
        Outcome.SUCCEEDED: metrics.succeeded,
        Outcome.FAILED: metrics.failed,
        Outcome.RETRIED: metrics.retried,
    }.get(outcome)
    if counter is not None:
        counter.labels(queue).inc()
    metrics.duration.labels(queue).observe(duration)
