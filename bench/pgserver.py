"""The PostgreSQL comparison's server: one private cluster, a database per peer, and probes.

``run.py --backend postgres`` starts one cluster of its own (``initdb`` into a temporary
directory, a free port, trust authentication for 127.0.0.1 only) with PostgreSQL's
defaults for everything that touches durability or speed (``fsync``, ``synchronous_commit``,
``wal_level``, ``shared_buffers``), the same for every peer; :data:`SETTINGS` is all it
changes, and the run prints it. The harness never touches a server it did not start.

Each peer's jobs live in a database of its own, ``bench_<peer>``, made again before every
phase from a template holding the peer's schema (``driver.py <adapter> setup`` installs it
there once a run), so each phase starts from empty tables, as the Redis runs start from an
empty Redis.

The drain window's per-job figures come from the server, read at the window's two marks:

* **xacts/job**: write transactions (those that were given a transaction id: every
  commit that changed a row, each one a WAL flush with the default ``synchronous_commit``),
  from the next transaction id;
* **WAL B/job**: bytes of WAL written, from the insert position.

Both are read without writing anything (the harness's polls do not count themselves).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

#: Where Debian's PostgreSQL 15 keeps its binaries (``--pg-bin`` overrides it).
PG_BIN = "/usr/lib/postgresql/15/bin"

#: What the private cluster sets, beyond ``initdb``'s defaults (for every peer alike).
#: ``max_connections``: two worker processes of a peer with its pools, its producer and
#: the harness fit with room to spare. Nothing here touches durability.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


@dataclass(frozen=True)
class Server:
    """A running private cluster: its port, the postmaster's pid (whose session holds every
    server process), and the ``postgres`` database's URL."""

    port: int
    version: str
    workdir: Path
    pid: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg  # noqa: PLC0415 - only the PostgreSQL comparison needs it

        return psycopg.connect(self.url(), autocommit=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_postgres(bindir: str = PG_BIN) -> Iterator[Server]:
    """A PostgreSQL cluster of our own on a free port, stopped and deleted on exit."""
    initdb, postgres = Path(bindir) / "initdb", Path(bindir) / "postgres"
    if not initdb.exists() or not postgres.exists():
        raise SystemExit(f"bench: no initdb/postgres in {bindir} (install PostgreSQL, or pass --pg-bin)")
    with tempfile.TemporaryDirectory(prefix="qw-bench-pg-") as workdir:
        data = Path(workdir) / "data"
        user = _server_user(Path(workdir))
        done = subprocess.run(
            [str(initdb), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
            capture_output=True,
            text=True,
            check=False,
            user=user,
        )
        if done.returncode != 0:
            raise SystemExit(f"bench: initdb failed: {done.stderr.strip()[-300:]}")
        port = free_port()
        argv = [str(postgres), "-D", str(data), "-p", str(port), "-k", workdir]
        for name, value in SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        log = (Path(workdir) / "postgres.log").open("wb")
        server = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, user=user
        )
        try:
            version = _wait_ready(server, port, Path(workdir) / "postgres.log")
            yield Server(port=port, version=version, workdir=Path(workdir), pid=server.pid)
        finally:
            server.terminate()  # smart shutdown: waits for the peers' connections to end
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.send_signal(2)  # fast shutdown
                try:
                    server.wait(15)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            log.close()


def _server_user(workdir: Path) -> str | None:
    """The user to run PostgreSQL as: ourselves, or, as root (which PostgreSQL refuses to
    run as), the ``postgres`` user, given ``workdir``."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise SystemExit("bench: PostgreSQL will not run as root, and there is no postgres user") from None
    os.chown(workdir, entry.pw_uid, entry.pw_gid)
    return "postgres"


def _wait_ready(server: subprocess.Popen[bytes], port: int, log: Path) -> str:
    import psycopg  # noqa: PLC0415 - only the PostgreSQL comparison needs it

    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    for _ in range(400):
        if server.poll() is not None:
            raise SystemExit(f"bench: postgres exited with {server.returncode}: {log.read_text()[-300:]}")
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
        time.sleep(0.025)
    raise SystemExit("bench: postgres did not accept connections within 10 s")


def database(peer: str) -> str:
    """The database a peer's jobs live in."""
    return "bench_" + peer.replace("-", "_")


def template(peer: str) -> str:
    return database(peer) + "_template"


def fresh(server: Server, peer: str) -> None:
    """Make the peer's database again from its template (its schema, no jobs)."""
    name, source = database(peer), template(peer)
    with server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {source}")


def new_template(server: Server, peer: str) -> None:
    """An empty database for the peer's schema (its ``setup`` action fills it)."""
    with server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {template(peer)} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {template(peer)}")


@dataclass
class Probe:
    """What the server says at one moment (read without writing), and the CPU seconds its
    processes and the peer's worker processes have used (``run.py`` fills those in)."""

    next_xid: int
    wal_lsn: int
    size: int
    server_cpu: float = 0.0
    worker_cpu: float = 0.0


class Prober:
    """Reads the server's counters on a connection of its own (to ``database``)."""

    def __init__(self, server: Server, database: str) -> None:
        import psycopg  # noqa: PLC0415 - only the PostgreSQL comparison needs it

        self.conn = psycopg.connect(server.url(database), autocommit=True)

    def __call__(self) -> Probe:
        row = self.conn.execute(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
            "pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint, "
            "pg_database_size(current_database())"
        ).fetchone()
        assert row is not None
        return Probe(int(row[0]), int(row[1]), int(row[2]))

    def close(self) -> None:
        self.conn.close()


def per_job(first: Probe, last: Probe, jobs: int) -> dict[str, float]:
    """The drain window's write transactions, WAL bytes and CPU (the server's processes,
    and the worker command's) per job."""
    server = 1e6 * (last.server_cpu - first.server_cpu) / jobs
    worker = 1e6 * (last.worker_cpu - first.worker_cpu) / jobs
    return {
        "xacts_per_job": (last.next_xid - first.next_xid) / jobs,
        "wal_bytes_per_job": (last.wal_lsn - first.wal_lsn) / jobs,
        "cpu_us_per_job": server + worker,
        "server_cpu_us_per_job": server,
        "worker_cpu_us_per_job": worker,
    }


def server_pids(server: Server) -> list[int]:
    """The postmaster and its children (each server process starts a session of its own,
    so they are found by their parent)."""
    pids = [server.pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == server.pid:
                    pids.append(int(entry.name))
    return pids


def describe(server: Server) -> str:
    """The cluster's settings that matter here, as the run prints them."""
    with server.admin() as conn:
        names = ("fsync", "synchronous_commit", "wal_level", "shared_buffers", "max_connections")
        shown = [f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}" for name in names]  # type: ignore[index]
    settings = ", ".join(shown)
    return f"PostgreSQL {server.version}, private cluster, initdb's defaults but max_connections: {settings}"
