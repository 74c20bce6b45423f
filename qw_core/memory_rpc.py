"""The memory backend across processes: a small server and a client.

The in-memory broker (:mod:`qw_core.memory`) lives in the manager process; worker
processes reach it through :class:`MemoryFactory`, which :meth:`MemoryBroker.factory
<qw_core.memory.MemoryBroker.factory>` returns. The factory is a tiny frozen value (an
address and a key), so it pickles for ``spawn`` as well as ``fork``, and calling it in
any process opens a :class:`MemoryClient`: a :class:`~qw_core.broker.Broker` that
forwards every call to a :class:`MemoryServer` thread beside the broker.

Why not :mod:`multiprocessing.managers`: its proxies pickle every argument and result,
and unpickling what arrives on a socket runs whatever the sender chose. Here the socket
carries JSON only (``send_bytes``/``recv_bytes``), the encoding below is written out by
hand, and errors come back by class name from an allow-list. The random ``authkey`` keeps
other local users from talking to the server; the listener binds to 127.0.0.1 only,
because the memory backend serves one host (``capabilities.multi_host`` is ``False``).

Jobs and failures cross the socket in the encoding every backend shares
(:mod:`qw_core.encoding`), the one the memory broker stores them in too.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from typing import Any

import attrs

from qw_core import errors
from qw_core.broker import Broker, Capabilities, Reaped, check_listed, check_minutes, check_page
from qw_core.encoding import failure_from_dict, failure_to_dict, job_from_dict, job_to_dict
from qw_core.errors import BackendError, BrokerUnavailable, ConfigurationError, QwError
from qw_core.models import (
    DEFAULT_QUEUE,
    FailedJob,
    Failure,
    Job,
    JobsRun,
    JobState,
    State,
    TickResult,
    TickState,
)
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.results import JobResult, check_ttl
from qw_core.unique import Queued

#: What the memory broker and its clients declare: one host, delays kept by the broker.
CAPABILITIES = Capabilities(
    multi_host=False,
    max_take=100,
    delayed=True,
    shared_by_url=False,
    schedules=True,
    throughput=True,
    unique=True,
)


def _state_to_dict(found: JobState) -> dict[str, Any]:
    return {
        "job_id": found.job_id,
        "state": found.state.value,
        "job": None if found.job is None else job_to_dict(found.job),
        "queue": found.queue,
        "worker": found.worker,
        "due_at": found.due_at,
        "since": found.since,
        "failure": None if found.failure is None else failure_to_dict(found.failure),
        "result": _result_to_dict(found.result),
        "finished_at": found.finished_at,
    }


def _state_from_dict(raw: Mapping[str, Any]) -> JobState:
    return JobState(
        job_id=raw["job_id"],
        state=State(raw["state"]),
        job=None if raw["job"] is None else job_from_dict(raw["job"]),
        queue=raw["queue"],
        worker=raw["worker"],
        due_at=raw["due_at"],
        since=raw["since"],
        failure=None if raw["failure"] is None else failure_from_dict(raw["failure"]),
        result=_result_from_dict(raw["result"]),
        finished_at=raw.get("finished_at"),
    )


def _result_to_dict(result: JobResult | None) -> dict[str, Any] | None:
    return None if result is None else attrs.asdict(result)


def _result_from_dict(raw: Mapping[str, Any] | None) -> JobResult | None:
    return None if raw is None else JobResult(**raw)


def _failed_to_dict(failed: FailedJob) -> dict[str, Any]:
    return {"job": job_to_dict(failed.job), "failure": failure_to_dict(failed.failure)}


def _failed_from_dict(raw: Mapping[str, Any]) -> FailedJob:
    return FailedJob(job=job_from_dict(raw["job"]), failure=failure_from_dict(raw["failure"]))


def dumps(value: object) -> str:
    """Compact JSON text for the socket, non-ASCII escaped (so text with a lone surrogate,
    which Python strings may hold, still encodes as bytes); NaN and infinities refused."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


# -- server -----------------------------------------------------------------------------

_Handler = Callable[[Broker, dict[str, Any]], object]

#: One entry per broker method a client may call: decode the arguments, call, encode.
_HANDLERS: dict[str, _Handler] = {
    "queue_jobs": lambda b, kw: b.queue_jobs(
        [job_from_dict(j) for j in kw["jobs"]], delay=kw["delay"], at=kw["at"]
    ),
    "queue_jobs_unique": lambda b, kw: [
        [q.id, q.created]
        for q in b.queue_jobs_unique([job_from_dict(j) for j in kw["jobs"]], delay=kw["delay"], at=kw["at"])
    ],
    "take": lambda b, kw: [{**job_to_dict(j), "suspect": j.suspect} for j in b.take(**kw)],
    "nudge": lambda b, kw: b.nudge(**kw),
    "finish_jobs": lambda b, kw: b.finish_jobs(**kw),
    "fail_job": lambda b, kw: b.fail_job(
        worker=kw["worker"],
        job=job_from_dict(kw["job"]),
        failure=failure_from_dict(kw["failure"]),
        limits=FailedLimits(**kw["limits"]),
    ),
    "retry_job": lambda b, kw: b.retry_job(
        worker=kw["worker"], job=job_from_dict(kw["job"]), delay=kw["delay"]
    ),
    "release_jobs": lambda b, kw: b.release_jobs(**kw),
    "recover_worker": lambda b, kw: b.recover_worker(**kw),
    "beat": lambda b, kw: b.beat(**kw),
    "reap": lambda b, kw: None if (done := b.reap(**kw)) is None else [attrs.asdict(r) for r in done],
    "register_manager": lambda b, kw: b.register_manager(**kw),
    "deregister_manager": lambda b, kw: b.deregister_manager(**kw),
    "register_worker": lambda b, kw: b.register_worker(**kw),
    "deregister_worker": lambda b, kw: b.deregister_worker(**kw),
    "managers": lambda b, kw: b.managers(),
    "workers": lambda b, kw: b.workers(**kw),
    "queued_job_ids": lambda b, kw: b.queued_job_ids(**kw),
    "held_job_ids": lambda b, kw: b.held_job_ids(**kw),
    "get_job": lambda b, kw: None if (job := b.get_job(**kw)) is None else job_to_dict(job),
    "failed_jobs": lambda b, kw: [_failed_to_dict(f) for f in b.failed_jobs(**kw)],
    "heartbeat_of": lambda b, kw: b.heartbeat_of(**kw),
    "delayed_job_ids": lambda b, kw: b.delayed_job_ids(**kw),
    "named_queues": lambda b, kw: b.named_queues(),
    "failed_count": lambda b, kw: b.failed_count(),
    "get_failed": lambda b, kw: None if (f := b.get_failed(**kw)) is None else _failed_to_dict(f),
    "failed_ids_with_prefix": lambda b, kw: b.failed_ids_with_prefix(**kw),
    "job_ids_with_prefix": lambda b, kw: b.job_ids_with_prefix(**kw),
    "finish_with_result": lambda b, kw: b.finish_with_result(**kw),
    "get_result": lambda b, kw: _result_to_dict(b.get_result(**kw)),
    "job_status": lambda b, kw: _state_to_dict(b.job_status(**kw)),
    "wait_result": lambda b, kw: _result_to_dict(b.wait_result(**kw)),
    "requeue_failed": lambda b, kw: b.requeue_failed(**kw),
    "purge_failed": lambda b, kw: b.purge_failed(**kw),
    "check_name": lambda b, kw: b.check_name(**kw),
    "stray_queues": lambda b, kw: b.stray_queues(),
    "move_queued": lambda b, kw: b.move_queued(**kw),
    "now": lambda b, kw: b.now(),
    "enqueue_tick": lambda b, kw: _tick_result_to_dict(
        b.enqueue_tick(kw["schedule_id"], kw["tick"], job_from_dict(kw["job"]), manager=kw["manager"])
    ),
    "declare_schedules": lambda b, kw: {
        i: None if found is None else attrs.asdict(found) for i, found in b.declare_schedules(**kw).items()
    },
    "schedule_declarations": lambda b, kw: b.schedule_declarations(),
    "tick_states": lambda b, kw: {i: attrs.asdict(found) for i, found in b.tick_states(**kw).items()},
    "note_jobs_run": lambda b, kw: b.note_jobs_run(**kw),
    "jobs_run": lambda b, kw: [[r.minute, dict(r.counts)] for r in b.jobs_run(**kw)],
}


def _tick_result_to_dict(result: TickResult) -> dict[str, Any]:
    return {"enqueued": result.enqueued, "last": attrs.asdict(result.last)}


#: The errors a client raises again by name; anything else arrives as BackendError.
_ERRORS: dict[str, type[QwError]] = {
    cls.__name__: cls
    for cls in (
        errors.QwError,
        errors.ConfigurationError,
        errors.InvalidName,
        errors.InvalidJob,
        errors.JobTooLarge,
        errors.BackendError,
        errors.BrokerUnavailable,
        errors.WorkerRunning,
    )
}


class MemoryServer:
    """Serves one broker to :class:`MemoryClient` connections, one thread per connection.

    A thread per connection, because a client's blocking :meth:`~Broker.take` holds its
    thread for up to its timeout and must not hold up anybody else. All threads call the
    same broker object, so it must be thread-safe (:class:`~qw_core.memory.MemoryBroker`
    is). Threads are daemons: a manager that exits does not wait for idle clients.
    """

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        authkey = secrets.token_bytes(32)
        # No authkey here: the handshake runs in each connection's thread (below), so a
        # client that connects and says nothing cannot stall the accept loop.
        self._listener = Listener(("127.0.0.1", 0), backlog=64)
        self._authkey = authkey
        address = self._listener.address
        assert isinstance(address, tuple)  # an AF_INET listener's: (host, port)
        host, port = address
        #: Opens clients of this server, in any process.
        self.factory = MemoryFactory(address=(host, port), authkey=authkey)
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()
        self._closed = False
        threading.Thread(target=self._accept_loop, name="qw-memory-server", daemon=True).start()

    def close(self) -> None:
        """Stop accepting, and cut every client off (their next call raises BrokerUnavailable)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            live = list(self._connections)
        # accept() is not interrupted by closing its socket on Linux; a last connection is.
        try:
            with socket.create_connection(self.factory.address, timeout=5):
                pass
        except OSError:
            pass  # the accept loop has already ended
        self._listener.close()
        for conn in live:
            # shutdown() (unlike close()) wakes a thread blocked in recv on the same socket.
            try:
                with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # that client's thread closed it meanwhile

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="qw-memory-client", daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        try:
            deliver_challenge(conn, self._authkey)
            answer_challenge(conn, self._authkey)
            while True:
                request = conn.recv_bytes()
                conn.send_bytes(self._handle(request).encode())
        except (OSError, EOFError, AuthenticationError):
            pass  # the client went away or was not one of ours
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _handle(self, request: bytes) -> str:
        try:
            message = json.loads(request)
            result = _HANDLERS[message["op"]](self._broker, message["kw"])
            return dumps({"ok": result})
        except QwError as exc:
            name = type(exc).__name__ if type(exc).__name__ in _ERRORS else "BackendError"
            return dumps({"error": [name, str(exc)]})
        except Exception as exc:  # reported to the caller, as a driver error would be
            return dumps({"error": ["BackendError", f"{type(exc).__name__}: {exc}"]})


# -- client -----------------------------------------------------------------------------


@attrs.frozen
class MemoryFactory:
    """Opens a :class:`MemoryClient` of one server; picklable, so workers can be spawned.

    :param address: the server's (host, port).
    :param authkey: the server's secret; kept out of ``repr`` so it stays out of logs.
    """

    address: tuple[str, int]
    authkey: bytes = attrs.field(repr=False)

    def __call__(self) -> MemoryClient:
        return MemoryClient(self)


class MemoryClient(Broker):
    """A :class:`~qw_core.broker.Broker` that forwards each call to a :class:`MemoryServer`.

    Jobs are checked and encoded here, so invalid data raises :class:`InvalidJob` before
    anything is sent. One client serves one thread, as the broker contract says; a lock
    keeps a misused client from interleaving replies all the same.
    """

    capabilities = CAPABILITIES

    def __init__(self, factory: MemoryFactory) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        try:
            self._conn = Client(factory.address, authkey=factory.authkey)
        except (OSError, EOFError, AuthenticationError) as exc:
            raise BrokerUnavailable(f"cannot reach the memory broker at {self.describe()}: {exc}") from exc

    def _call(self, op: str, **kw: Any) -> Any:
        request = dumps({"op": op, "kw": kw}).encode()
        with self._lock:
            try:
                self._conn.send_bytes(request)
                reply = json.loads(self._conn.recv_bytes())
            except (OSError, EOFError) as exc:
                raise BrokerUnavailable(f"lost the memory broker at {self.describe()}: {exc}") from exc
        if "error" in reply:
            name, message = reply["error"]
            raise _ERRORS.get(name, BackendError)(message)
        return reply["ok"]

    def queue_jobs(self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None) -> list[str]:
        """See :meth:`Broker.queue_jobs`."""
        ids = self._call("queue_jobs", jobs=[job_to_dict(job) for job in jobs], delay=delay, at=at)
        return [str(job_id) for job_id in ids]

    def queue_jobs_unique(
        self, jobs: Sequence[Job], *, delay: float = 0.0, at: float | None = None
    ) -> list[Queued]:
        """See :meth:`Broker.queue_jobs_unique`."""
        found = self._call("queue_jobs_unique", jobs=[job_to_dict(job) for job in jobs], delay=delay, at=at)
        return [Queued(str(job_id), bool(created)) for job_id, created in found]

    def take(
        self,
        *,
        manager: str,
        worker: str,
        finished: Sequence[str] = (),
        held: Sequence[str] = (),
        limit: int = 1,
        timeout: float = 0.0,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        keep_finished: float = 0.0,
    ) -> list[Job]:
        """See :meth:`Broker.take`; the wait happens in the server, not in this process."""
        found = self._call(
            "take",
            manager=manager,
            worker=worker,
            finished=list(finished),
            held=list(held),
            limit=limit,
            timeout=timeout,
            queues=list(queues),
            keep_finished=check_ttl(keep_finished),
        )
        return [attrs.evolve(job_from_dict(raw), suspect=bool(raw.get("suspect"))) for raw in found]

    def nudge(self, worker: str) -> None:
        """See :meth:`Broker.nudge`."""
        self._call("nudge", worker=worker)

    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        """See :meth:`Broker.finish_jobs`."""
        keep = check_ttl(keep_finished)
        done = self._call("finish_jobs", worker=worker, job_ids=list(job_ids), keep_finished=keep)
        return [bool(flag) for flag in done]

    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        """See :meth:`Broker.fail_job`."""
        encoded = {
            "job": job_to_dict(job),
            "failure": failure_to_dict(failure),
            "limits": attrs.asdict(limits),
        }
        return bool(self._call("fail_job", worker=worker, **encoded))

    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        """See :meth:`Broker.retry_job`."""
        return bool(self._call("retry_job", worker=worker, job=job_to_dict(job), delay=delay))

    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        """See :meth:`Broker.release_jobs`."""
        return int(self._call("release_jobs", worker=worker, job_ids=list(job_ids)))

    def recover_worker(
        self,
        *,
        manager: str,
        worker: str,
        max_recoveries: int | None = None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
    ) -> int:
        """See :meth:`Broker.recover_worker`."""
        return int(
            self._call(
                "recover_worker",
                manager=manager,
                worker=worker,
                max_recoveries=max_recoveries,
                crashed_job=crashed_job,
                suspects=list(suspects),
            )
        )

    def beat(
        self,
        *,
        manager: str,
        token: str,
        workers: Mapping[str, str],
        ttl: float,
        running: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, str | None]:
        """See :meth:`Broker.beat`."""
        running_ = None if running is None else {w: dict(jobs) for w, jobs in running.items()}
        changed = self._call(
            "beat", manager=manager, token=token, workers=dict(workers), ttl=ttl, running=running_
        )
        return {str(name): None if previous is None else str(previous) for name, previous in changed.items()}

    def reap(
        self, *, owner: str, lease: float, ttl: float, max_recoveries: int | None = 3
    ) -> list[Reaped] | None:
        """See :meth:`Broker.reap`."""
        done = self._call("reap", owner=owner, lease=lease, ttl=ttl, max_recoveries=max_recoveries)
        return None if done is None else [Reaped(**raw) for raw in done]

    def register_manager(self, name: str) -> None:
        """See :meth:`Broker.register_manager`."""
        self._call("register_manager", name=name)

    def deregister_manager(self, name: str) -> None:
        """See :meth:`Broker.deregister_manager`."""
        self._call("deregister_manager", name=name)

    def register_worker(self, *, manager: str, worker: str) -> None:
        """See :meth:`Broker.register_worker`."""
        self._call("register_worker", manager=manager, worker=worker)

    def deregister_worker(self, *, manager: str, worker: str) -> None:
        """See :meth:`Broker.deregister_worker`."""
        self._call("deregister_worker", manager=manager, worker=worker)

    def now(self) -> float:
        """See :meth:`Broker.now`: the server's clock."""
        return float(self._call("now"))

    def enqueue_tick(self, schedule_id: str, tick: float, job: Job, *, manager: str) -> TickResult:
        """See :meth:`Broker.enqueue_tick`."""
        raw = self._call(
            "enqueue_tick", schedule_id=schedule_id, tick=tick, job=job_to_dict(job), manager=manager
        )
        return TickResult(enqueued=bool(raw["enqueued"]), last=TickState(**raw["last"]))

    def declare_schedules(
        self, *, manager: str, declarations: Mapping[str, str], ttl: float
    ) -> dict[str, TickState | None]:
        """See :meth:`Broker.declare_schedules`."""
        raw = self._call("declare_schedules", manager=manager, declarations=dict(declarations), ttl=ttl)
        return {str(i): None if found is None else TickState(**found) for i, found in raw.items()}

    def schedule_declarations(self) -> dict[str, dict[str, str]]:
        """See :meth:`Broker.schedule_declarations`."""
        raw = self._call("schedule_declarations")
        return {str(m): {str(i): str(text) for i, text in found.items()} for m, found in raw.items()}

    def tick_states(self, schedule_ids: Sequence[str]) -> dict[str, TickState]:
        """See :meth:`Broker.tick_states`."""
        raw = self._call("tick_states", schedule_ids=list(schedule_ids))
        return {str(i): TickState(**found) for i, found in raw.items()}

    def managers(self) -> list[str]:
        """See :meth:`Broker.managers`."""
        return [str(name) for name in self._call("managers")]

    def workers(self, manager: str) -> list[str]:
        """See :meth:`Broker.workers`."""
        return [str(name) for name in self._call("workers", manager=manager)]

    def queued_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.queued_job_ids`."""
        check_page(offset, limit)
        check_listed(manager, queue)  # its ValueError, here: the server's would be a BackendError
        found = self._call("queued_job_ids", manager=manager, queue=queue, offset=offset, limit=limit)
        return [str(job_id) for job_id in found]

    def held_job_ids(self, worker: str, *, offset: int = 0, limit: int | None = None) -> list[str]:
        """See :meth:`Broker.held_job_ids`."""
        check_page(offset, limit)
        found = self._call("held_job_ids", worker=worker, offset=offset, limit=limit)
        return [str(job_id) for job_id in found]

    def get_job(self, job_id: str) -> Job | None:
        """See :meth:`Broker.get_job`."""
        raw = self._call("get_job", job_id=job_id)
        return None if raw is None else job_from_dict(raw)

    def stray_queues(self) -> dict[str, int]:
        """See :meth:`Broker.stray_queues`."""
        return {str(name): int(count) for name, count in self._call("stray_queues").items()}

    def move_queued(self, name: str, *, to: str | None = None) -> int:
        """See :meth:`Broker.move_queued`."""
        return int(self._call("move_queued", name=name, to=to))

    def heartbeat_of(self, name: str) -> tuple[str, float] | None:
        """See :meth:`Broker.heartbeat_of`."""
        found = self._call("heartbeat_of", name=name)
        return None if found is None else (str(found[0]), float(found[1]))

    def delayed_job_ids(
        self,
        manager: str | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """See :meth:`Broker.delayed_job_ids`."""
        check_page(offset, limit)
        check_listed(manager, queue)  # its ValueError, here: the server's would be a BackendError
        found = self._call("delayed_job_ids", manager=manager, queue=queue, offset=offset, limit=limit)
        return [str(job_id) for job_id in found]

    def named_queues(self) -> list[str]:
        """See :meth:`Broker.named_queues`."""
        return [str(name) for name in self._call("named_queues")]

    def failed_jobs(self, limit: int = 100) -> list[FailedJob]:
        """See :meth:`Broker.failed_jobs`."""
        return [_failed_from_dict(raw) for raw in self._call("failed_jobs", limit=limit)]

    def note_jobs_run(self, *, manager: str, count: int) -> None:
        """See :meth:`Broker.note_jobs_run`."""
        super().note_jobs_run(manager=manager, count=count)
        self._call("note_jobs_run", manager=manager, count=count)

    def jobs_run(self, *, minutes: int = 15) -> list[JobsRun]:
        """See :meth:`Broker.jobs_run`."""
        check_minutes(minutes)
        return [JobsRun(minute=m, counts=c) for m, c in self._call("jobs_run", minutes=minutes)]

    def failed_count(self) -> int:
        """See :meth:`Broker.failed_count`."""
        return int(self._call("failed_count"))

    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        """See :meth:`Broker.finish_with_result`."""
        return bool(self._call("finish_with_result", worker=worker, job_id=job_id, result=result, ttl=ttl))

    def job_status(self, job_id: str) -> JobState:
        """See :meth:`Broker.job_status`."""
        return _state_from_dict(self._call("job_status", job_id=job_id))

    def get_result(self, job_id: str) -> JobResult | None:
        """See :meth:`Broker.get_result`."""
        return _result_from_dict(self._call("get_result", job_id=job_id))

    def wait_result(self, job_id: str, timeout: float) -> JobResult | None:
        """See :meth:`Broker.wait_result`; the wait happens in the server."""
        return _result_from_dict(self._call("wait_result", job_id=job_id, timeout=timeout))

    def job_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """See :meth:`Broker.job_ids_with_prefix`."""
        return [str(job_id) for job_id in self._call("job_ids_with_prefix", prefix=prefix, limit=limit)]

    def failed_ids_with_prefix(self, prefix: str, *, limit: int = 10) -> list[str]:
        """See :meth:`Broker.failed_ids_with_prefix`."""
        return [str(job_id) for job_id in self._call("failed_ids_with_prefix", prefix=prefix, limit=limit)]

    def get_failed(self, job_id: str) -> FailedJob | None:
        """See :meth:`Broker.get_failed`."""
        raw = self._call("get_failed", job_id=job_id)
        return None if raw is None else _failed_from_dict(raw)

    def requeue_failed(self, job_id: str) -> bool:
        """See :meth:`Broker.requeue_failed`."""
        return bool(self._call("requeue_failed", job_id=job_id))

    def purge_failed(self, job_ids: Sequence[str] | None = None) -> int:
        """See :meth:`Broker.purge_failed`."""
        return int(self._call("purge_failed", job_ids=None if job_ids is None else list(job_ids)))

    @classmethod
    def from_url(cls, url: str | None = None) -> Broker:
        """Not supported: a client needs the server's secret, which only its factory carries.

        :raises ConfigurationError: always.
        """
        raise ConfigurationError("a memory client is opened with MemoryBroker.factory(), not a URL")

    def factory(self) -> MemoryFactory:
        """The factory this client came from: every client of a server is equivalent."""
        return self._factory

    def check_name(self, name: str) -> str:
        """See :meth:`Broker.check_name`; asked of the server, which owns the rules."""
        return str(self._call("check_name", name=name))

    def close(self) -> None:
        """Close the connection; the server's thread for it ends."""
        self._conn.close()

    def describe(self) -> str:
        """``memory://127.0.0.1:PORT``: the server this client talks to."""
        host, port = self._factory.address
        return f"memory://{host}:{port}"
