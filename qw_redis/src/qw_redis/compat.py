"""The original qw 0.1.1 API: ``Client``, ``Manager`` and ``Worker``, with their signatures.

Programs written against qw 0.1.1 keep working by changing their imports to
``from qw_redis import Client, Manager, Worker``. Underneath, everything goes through
:class:`~qw_redis.broker.RedisBroker` (the same scripts and keys), so what the original did
unsafely is fixed here too:

* :meth:`Client.fetch_next_job` leaves the job on ``<w>:jobs`` until
  :meth:`Client.finish_job` (the original ``LPOP``\\ ed it, losing it on a crash);
* a job queued for a manager wakes a blocked fetch at once, not after the 10 s timeout;
* hash values of jobs queued through qw come back as the JSON values they were (plain
  string fields written by hand still come back as strings).

``Manager`` and ``Worker`` wrap :class:`qw_core.manager.Manager` and
:class:`qw_core.worker.Worker`, so they get recovery of dead workers, failed-job records
and plugins.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import redis

from qw_core.broker import BrokerFactory
from qw_core.manager import Manager as CoreManager
from qw_core.models import JSON, Job
from qw_core.worker import Worker as CoreWorker
from qw_redis import keys
from qw_redis.broker import RedisBroker
from qw_redis.factories import factory_for

Target = str | Callable[..., Any]


def _url(host: str, port: int, db: int) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"redis://{host}:{port}/{db}"


class Client(redis.StrictRedis):
    """A Redis client with the original qw's job and membership methods.

    Replies are decoded (``decode_responses=True``), so ids and names are ``str``.
    """

    def __init__(self, host: str = "localhost", port: int = 6379, db: int = 0) -> None:
        super().__init__(host=host, port=port, db=db, decode_responses=True)
        self._broker = RedisBroker(self)
        self._held: dict[str, list[str]] = {}  # ids fetched and not finished yet, per worker

    # -- membership ----------------------------------------------------------------------

    def register_manager(self, name: str) -> None:
        """Add ``name`` to ``all:managers``."""
        self._broker.register_manager(name)

    def deregister_manager(self, name: str) -> None:
        """Remove ``name`` from ``all:managers``."""
        self._broker.deregister_manager(name)

    def register_worker(self, manager: str, name: str) -> None:
        """Add worker ``name`` to ``<manager>:workers``."""
        self._broker.register_worker(manager=manager, worker=name)

    def deregister_worker(self, manager: str, name: str) -> None:
        """Remove worker ``name`` from ``<manager>:workers``."""
        self._broker.deregister_worker(manager=manager, worker=name)

    # -- jobs ----------------------------------------------------------------------------

    def queue_job(self, job_data: JSON, manager: str | None = None, worker: str | None = None) -> str:
        """Queue ``job_data`` for ``manager``'s workers, ``worker``, or anybody; return its id."""
        job = Job.new(job_data, manager=manager, worker=worker)
        self._broker.queue_job(job)
        return job.id

    def fetch_next_job(self, manager: str, worker: str, timeout: float = 10) -> tuple[str, JSON] | None:
        """Take the next job for ``worker`` of ``manager``: ``(job_id, job_data)``, or ``None``.

        Waits up to ``timeout`` seconds. The job stays on ``<worker>:jobs`` until
        :meth:`finish_job`; jobs fetched and not finished are not handed out again by
        this client (a new client, as after a restart, gets them first).
        """
        held = self._held.setdefault(worker, [])
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            jobs = self._broker.take(manager=manager, worker=worker, held=held, timeout=remaining)
            if jobs:
                held.append(jobs[0].id)
                return jobs[0].id, jobs[0].data
            if remaining <= 0:
                return None

    def finish_job(self, job_id: str, worker_name: str) -> None:
        """Delete the job and take it off ``<worker_name>:jobs`` (if the worker still holds it)."""
        self._broker.finish_jobs(worker=worker_name, job_ids=[job_id])
        held = self._held.get(worker_name, [])
        if job_id in held:
            held.remove(job_id)

    # -- listings ------------------------------------------------------------------------

    def get_all_managers(self) -> set[str]:
        """The names in ``all:managers``."""
        return set(self._broker.managers())

    def get_manager_workers(self, manager_name: str) -> set[str]:
        """The names in ``<manager_name>:workers``."""
        return set(self._broker.workers(manager_name))

    def get_worker_pending_jobs(self, worker_name: str) -> list[str]:
        """The ids on ``<worker_name>:jobs``, as ``LRANGE`` lists them."""
        return cast("list[str]", self.lrange(keys.queue(worker_name), 0, -1))

    def get_manager_queued_jobs(self, manager_name: str) -> list[str]:
        """The ids on ``<manager_name>:jobs``, as ``LRANGE`` lists them (next to run last)."""
        return cast("list[str]", self.lrange(keys.queue(manager_name), 0, -1))

    def get_all_queued_jobs(self) -> Iterator[tuple[str | None, str]]:
        """``(None, id)`` for each id on ``all:jobs``, then ``(manager, id)`` per manager queue."""
        for job_id in cast("list[str]", self.lrange(keys.ALL_JOBS, 0, -1)):
            yield None, job_id
        for manager in self._broker.managers():
            for job_id in self.get_manager_queued_jobs(manager):
                yield manager, job_id

    def get_all_pending_jobs(self) -> Iterator[tuple[str, str]]:
        """``(worker, id)`` for each id on each running worker's ``<worker>:jobs``."""
        for manager in self._broker.managers():
            for worker in self._broker.workers(manager):
                for job_id in self.get_worker_pending_jobs(worker):
                    yield worker, job_id


class Manager:
    """Starts ``num_workers`` worker processes running ``target`` (see :class:`qw_core.manager.Manager`).

    :param name: the manager's name; defaults to the host name.
    :param num_workers: defaults to the CPU count.
    """

    def __init__(  # noqa: PLR0917 - the original qw's positional signature
        self,
        target: Target,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        num_workers: int | None = None,
        name: str | None = None,
    ) -> None:
        broker = RedisBroker.from_url(_url(host, port, db))
        self._manager = CoreManager(target, broker, num_workers=num_workers, name=name)
        self.name = self._manager.name
        self.num_workers = self._manager.num_workers

    def start(self) -> None:
        """Start the workers and register the manager; returns at once."""
        self._manager.start()

    def stop(self) -> None:
        """Ask the workers to finish their current job and stop; returns at once."""
        self._manager.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the manager and its workers have stopped; return whether they have.

        Called from the main thread, as in the original's "Basic Usage" script, it also
        stops the manager cleanly on SIGTERM, SIGINT (Ctrl-C) or SIGHUP, so such a script
        deregisters and lets running jobs finish instead of dying mid-job.
        """
        if threading.current_thread() is not threading.main_thread():
            return self._manager.join(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._manager.stopping_on_signals():
            while not self._manager.join(timeout=0.5):  # short waits let signal handlers run
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        return True


class Worker(multiprocessing.Process):
    """A worker process taking jobs for ``manager_name`` and calling ``target`` with them.

    :param client: says which Redis to use (a :class:`Client` or any redis-py client);
        the process opens its own connection from the client's settings.
    :param manager_name: the manager it works for; defaults to the host name. The worker
        is named ``<manager_name>.<pid>``.
    :param timeout: the longest single wait for a job, in seconds (at most 1 s is used, so
        :meth:`shutdown` is noticed quickly; jobs never wait for it: queuing wakes workers).
    """

    def __init__(
        self,
        client: redis.Redis,
        target: Target,
        manager_name: str | None = None,
        timeout: float = 10,
    ) -> None:
        super().__init__(name=f"qw-worker-{manager_name or socket.gethostname()}")
        self.broker_factory: BrokerFactory = factory_for(client)
        self.target = target
        self.manager_name = manager_name or socket.gethostname()
        self.timeout = timeout
        self._stop_event = multiprocessing.Event()

    def run(self) -> None:
        """Register, take and run jobs until :meth:`shutdown` (or the parent exits), deregister."""
        broker = self.broker_factory()
        try:
            worker = CoreWorker(
                broker,
                self.target,
                manager=self.manager_name,
                block_timeout=max(0.1, min(float(self.timeout), 1.0)),
                parent_pid=os.getppid(),
            )
            watcher = threading.Thread(target=self._watch, args=(worker,), daemon=True)
            watcher.start()
            worker.run()
        finally:
            broker.close()

    def _watch(self, worker: CoreWorker) -> None:
        self._stop_event.wait()
        worker.request_stop()

    def shutdown(self) -> None:
        """Ask the worker to finish its current job and exit (callable from any process)."""
        self._stop_event.set()
