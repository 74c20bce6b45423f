"""The memory backend across processes: a small server, and a client that forwards to it.

The in-memory broker (:mod:`qw_core.memory`) lives in the manager process; worker
processes reach it through :class:`MemoryFactory`, which :meth:`MemoryBroker.factory
<qw_core.memory.MemoryBroker.factory>` returns. The factory is a tiny frozen value (an
address and a key), so it pickles for ``spawn`` as well as ``fork``, and calling it in
any process opens a :class:`MemoryClient`: a :class:`~qw_core.broker.Broker` that
forwards every call to a :class:`MemoryServer` thread beside the broker.

**Why this exists beside ``qw run --embedded``.** ``--embedded`` serves a fake Redis
(fakeredis's TCP server) so that ``qw run`` works with nothing installed; it runs the
Redis backend's code, and it lives in ``qw_cli`` because core never imports a backend.
The memory broker is core's own test double, and a :class:`~qw_core.manager.Manager` on it
starts real worker processes: they need a way to reach the broker in the manager process
that does not go through any backend. So the forwarding stays, made as small as it can
be: the client has no method written per call. It forwards every method of the broker's
roles by name (:data:`FORWARDED`), and the server calls the method of that name; only what
cannot cross a socket (a ``progress`` callback, a ``datetime``) runs in the client, on
:class:`~qw_core.broker.Broker`'s defaults, which call forwarded methods.

**The wire.** Not :mod:`multiprocessing.managers`: its proxies pickle every argument and
result, and unpickling what arrives on a socket runs whatever the sender chose. Here the
socket carries JSON only (``send_bytes``/``recv_bytes``): a value that is not plain JSON
is an object tagged with its type (:func:`encode`), decoded only for the types on an
allow-list (:data:`_TYPES`), and errors come back by class name from another. Jobs are
encoded as every backend encodes them (:mod:`qw_core.encoding`), so invalid data raises
:class:`~qw_core.errors.InvalidJob` in the client, before anything is sent. The random
``authkey`` keeps other local users from talking to the server; the listener binds to
127.0.0.1 only, because the memory backend serves one host (``capabilities.multi_host``
is ``False``).
"""

from __future__ import annotations

import enum
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from typing import Any, cast

import attrs

from qw_core import errors, models, policy, results, unique
from qw_core.broker import (
    Administrator,
    Broker,
    Capabilities,
    Consumer,
    Inspector,
    Membership,
    Periodic,
    Producer,
    Reaped,
    Role,
)
from qw_core.encoding import job_from_dict, job_to_dict
from qw_core.errors import BackendError, BrokerUnavailable, ConfigurationError, QwError

#: What the memory broker and its clients declare: one host, delays kept by the broker.
CAPABILITIES = Capabilities(
    multi_host=False,
    max_take=100,
    delayed=True,
    shared_by_url=False,
    schedules=True,
    throughput=True,
    unique=True,
    registered_managers=True,
)

#: What a client runs itself rather than forwarding: its own lifetime and identity, the
#: class methods, and the calls whose arguments cannot cross a socket (``queue_job``'s
#: ``datetime``, the bulk calls' ``progress`` callbacks), which Broker's defaults build
#: from forwarded calls.
LOCAL = frozenset(
    {
        "factory",
        "close",
        "describe",
        "from_url",
        "apply_migrations",
        "migration_script",
        "queue_job",
        "queue_job_unique",
        "requeue_all_failed",
        "purge_all_failed",
    }
)

#: Every other public method of the broker's roles, forwarded by name.
FORWARDED = frozenset(
    name
    for role in (Role, Producer, Consumer, Membership, Inspector, Administrator, Periodic)
    for name, value in vars(role).items()
    if not name.startswith("_") and callable(value) and name not in LOCAL
)

# -- the wire ---------------------------------------------------------------------------

#: The types a value on the wire may be decoded to, by name (an allow-list, as for errors).
_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        models.Failure,
        models.FailedJob,
        models.JobState,
        models.JobsRun,
        models.RunningJob,
        models.ScheduleInfo,
        models.State,
        models.TickResult,
        models.TickState,
        policy.FailedLimits,
        results.JobResult,
        unique.Queued,
        Reaped,
    )
}

#: The errors a client raises again by name: every error of qw's own, and ValueError (a
#: page or count out of range); anything else arrives as BackendError.
_ERRORS: dict[str, type[Exception]] = {
    **{name: cls for name, cls in vars(errors).items() if isinstance(cls, type) and issubclass(cls, QwError)},
    "ValueError": ValueError,
}


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data: plain JSON values as they are, anything else (a
    tuple, a mapping, an enum, a job, an attrs value of :data:`_TYPES`) as
    ``{"t": TYPE, "v": ...}``, so that :func:`decode` gives back an equal value.

    A job's data, meta and a result's value are JSON already and are not walked (a user's
    dict may hold a key ``"t"``).

    :raises InvalidJob: a job's data or meta is not JSON.
    :raises TypeError: a value the memory broker's wire cannot carry.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list):
        return [encode(item) for item in value]
    kind, payload = _tagged(value)
    return {"t": kind, "v": payload}


def _tagged(value: object) -> tuple[str, Any]:
    if isinstance(value, tuple):
        return "tuple", [encode(item) for item in value]
    if isinstance(value, Mapping):
        return "dict", {str(key): encode(item) for key, item in value.items()}
    if isinstance(value, models.Job):
        return "Job", {**job_to_dict(value), "suspect": value.suspect}
    kind = type(value).__name__
    if _TYPES.get(kind) is not type(value):
        raise TypeError(f"a {type(value).__qualname__} cannot be sent to the memory broker")
    if isinstance(value, enum.Enum):
        return kind, value.value
    if isinstance(value, results.JobResult):
        return kind, attrs.asdict(value)  # its value is JSON: as it is
    fields = attrs.fields(cast("type[attrs.AttrsInstance]", type(value)))
    return kind, {field.name: encode(getattr(value, field.name)) for field in fields}


def decode(raw: Any) -> Any:
    """The value :func:`encode` encoded.

    :raises BackendError: a type that is not on the allow-list.
    """
    if isinstance(raw, list):
        return [decode(item) for item in raw]
    if not isinstance(raw, dict):
        return raw
    kind, value = raw["t"], raw["v"]
    if kind in _CONTAINERS:
        return _CONTAINERS[kind](value)
    cls = _TYPES.get(kind)
    if cls is None:
        raise BackendError(f"the memory broker's wire carries no {kind!r}")
    if issubclass(cls, enum.Enum):
        return cls(value)
    if cls is results.JobResult:
        return results.JobResult(**value)  # its value is JSON: as it is
    return cls(**{name: decode(item) for name, item in value.items()})


#: How :func:`decode` reads the tags that are not a type of :data:`_TYPES`.
_CONTAINERS: dict[str, Callable[[Any], Any]] = {
    "tuple": lambda items: tuple(decode(item) for item in items),
    "dict": lambda items: {key: decode(item) for key, item in items.items()},
    "Job": lambda fields: attrs.evolve(job_from_dict(fields), suspect=bool(fields.get("suspect"))),
}


def dumps(value: object) -> str:
    """Compact JSON text for the socket, non-ASCII escaped (so text with a lone surrogate,
    which Python strings may hold, still encodes as bytes); NaN and infinities refused."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


# -- server -----------------------------------------------------------------------------


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
            op = message["op"]
            if op not in FORWARDED:
                raise BackendError(f"the memory broker serves no call {op!r}")
            args = [decode(arg) for arg in message["args"]]
            kwargs = {name: decode(value) for name, value in message["kwargs"].items()}
            return dumps({"ok": encode(getattr(self._broker, op)(*args, **kwargs))})
        except (QwError, ValueError) as exc:  # the contract's errors, raised again by the client
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

    def __call__(self) -> Broker:
        return MemoryClient(self)


class _Client(Broker):
    """What a client does itself; every method of :data:`FORWARDED` is added to it to make
    :data:`MemoryClient`.

    One client serves one thread, as the broker contract says; a lock keeps a misused
    client from interleaving replies all the same.
    """

    capabilities = CAPABILITIES

    def __init__(self, factory: MemoryFactory) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        try:
            self._conn = Client(factory.address, authkey=factory.authkey)
        except (OSError, EOFError, AuthenticationError) as exc:
            raise BrokerUnavailable(f"cannot reach the memory broker at {self.describe()}: {exc}") from exc

    def _call(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``op`` in the server; its result, or the error it raised."""
        request = {"op": op, "args": [encode(arg) for arg in args], "kwargs": encode(kwargs)["v"]}
        try:
            data = dumps(request).encode()
        except ValueError as exc:  # NaN or an infinity, which JSON (and every backend) refuses
            raise ConfigurationError(f"{op}: an argument holds a number that is not finite ({exc})") from exc
        with self._lock:
            try:
                self._conn.send_bytes(data)
                reply = json.loads(self._conn.recv_bytes())
            except (OSError, EOFError) as exc:
                raise BrokerUnavailable(f"lost the memory broker at {self.describe()}: {exc}") from exc
        if "error" in reply:
            name, message = reply["error"]
            raise _ERRORS.get(name, BackendError)(message)
        return decode(reply["ok"])

    @classmethod
    def from_url(cls, url: str | None = None) -> Broker:
        """Not supported: a client needs the server's secret, which only its factory carries.

        :raises ConfigurationError: always.
        """
        raise ConfigurationError("a memory client is opened with MemoryBroker.factory(), not a URL")

    def factory(self) -> MemoryFactory:
        """The factory this client came from: every client of a server is equivalent."""
        return self._factory

    def close(self) -> None:
        """Close the connection; the server's thread for it ends."""
        self._conn.close()

    def describe(self) -> str:
        """``memory://127.0.0.1:PORT``: the server this client talks to."""
        host, port = self._factory.address
        return f"memory://{host}:{port}"


def _forwarder(op: str) -> Callable[..., Any]:
    def forward(self: _Client, *args: Any, **kwargs: Any) -> Any:
        return self._call(op, args, kwargs)

    forward.__name__ = forward.__qualname__ = op
    forward.__doc__ = f"See :meth:`Broker.{op} <qw_core.broker.Broker.{op}>`; run by the server."
    return forward


#: A :class:`~qw_core.broker.Broker` that forwards each call to a :class:`MemoryServer`:
#: :class:`_Client` with a forwarding method for each name of :data:`FORWARDED`.
MemoryClient = cast(
    "type[_Client]",
    type(
        "MemoryClient",
        (_Client,),
        {
            **{op: _forwarder(op) for op in sorted(FORWARDED)},
            "__module__": __name__,
            "__doc__": "A Broker that forwards each call to a MemoryServer (see the module).",
        },
    ),
)
