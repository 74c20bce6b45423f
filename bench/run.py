"""qw against the other Redis job queues for Python: one table, measured in one run.

    python bench/run.py                  # qw and every peer (installs them on first use)
    python bench/run.py --quick          # qw only, small N (the CI smoke)
    python bench/run.py --peers qw,huey --json
    python bench/run.py --io 20          # I/O mode: every job waits 20 ms (drain only)

One private ``redis-server`` (a free port, no persistence) serves every peer in turn. Each
peer runs from its own virtualenv under ``bench/.venvs/`` (see ``venvs.py``) through
``driver.py`` and its adapter in ``peers/``; qw runs with the interpreter running this
script. For each peer, with 2 worker processes and a no-op task that INCRs a counter:

1. enqueue: N single calls, timed in the producer; then the bulk API where there is one;
2. Redis memory per queued job: ``used_memory`` before and after queuing the drain jobs;
3. drain: start the workers on the full queue; rate, commands and round trips per job are
   taken between 10% and 90% of the jobs done (start-up and the tail left out), from
   ``INFO commandstats`` (commands, those inside scripts included) and
   ``total_reads_processed`` (requests read from clients: a pipeline or a script is one)
   minus the harness's own polling;
4. idle: the workers' CPU over two seconds with an empty queue, and their RSS;
5. latency: one job at a time to idle workers, the task reports ``start - queued``.

In I/O mode (``--io MS``) each job first waits MS milliseconds (``time.sleep`` in a peer
that runs plain functions, ``await asyncio.sleep`` in one that runs coroutines), each peer
runs with its own concurrency setting for such work (``concurrency()`` in its adapter), and
only the drain is measured (3), with the workers' RSS.

A peer that fails to install or run shows its reason in the table; the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pgserver  # noqa: E402
import redis  # noqa: E402 - in the bench dependency group (and a dependency of qw-redis)
import venvs  # noqa: E402
from charts import write_charts  # noqa: E402 - matplotlib itself is imported when a chart is drawn
from peers import PEERS, Peer  # noqa: E402
from peers.common import DONE  # noqa: E402

RESULTS = HERE / "results"
WORKERS = 2
#: Drain window: from this fraction of the jobs done to the next.
WINDOW = (0.10, 0.90)
POLL = 0.005


@dataclass(frozen=True)
class Sizes:
    single: int
    drain: int
    latency: int


FULL = Sizes(single=5_000, drain=20_000, latency=300)
QUICK = Sizes(single=300, drain=1_000, latency=20)
#: I/O mode's default job count is this many seconds of waiting spread over the jobs: about
#: 20 s of draining for a peer that runs one job at a time in each of its 2 processes.
IO_WAIT_BUDGET = 40.0
#: ... and at least this many seconds of draining at the peer's ideal rate (its jobs in
#: flight / the wait), so that a peer with many jobs in flight is measured for long enough
#: to reach its steady rate (at most :data:`FULL`'s drain size).
IO_IDEAL_SECONDS = 2.0


def io_jobs(ms: float, quick: bool) -> int:
    """Jobs per drain for ``--io MS`` without ``--jobs``: 2,000 at 20 ms (``--quick``: 200)."""
    jobs = IO_WAIT_BUDGET * 1000 / max(ms, 2.0)
    low, high = (100, QUICK.drain) if quick else (200, FULL.drain)
    if quick:
        jobs /= 10
    return int(min(high, max(low, round(jobs, -2))))


class PeerFailed(Exception):
    """One peer could not be measured; the message goes in the table.

    :param details: what was learnt before the failure (I/O mode: the peer's concurrency).
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


# -- the private Redis ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis(binary: str) -> Iterator[redis.Redis]:
    """A redis-server of our own on a free port, gone on exit."""
    path = shutil.which(binary)
    if path is None:
        raise SystemExit(f"bench: {binary} is not on the PATH (install Redis, or pass --redis-server)")
    with tempfile.TemporaryDirectory(prefix="qw-bench-") as workdir:
        port = free_port()
        argv = [path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", workdir, "--loglevel", "warning", "--protected-mode", "no"]
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        try:
            for _ in range(200):
                with contextlib.suppress(redis.ConnectionError):
                    client.ping()
                    break
                if server.poll() is not None:
                    raise SystemExit(f"bench: redis-server exited with {server.returncode}")
                time.sleep(0.025)
            yield client
        finally:
            client.close()
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def url_of(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


@dataclass
class Snapshot:
    at: float
    done: int
    commands: dict[str, int]
    reads: int
    used_memory: int
    #: CPU seconds so far: Redis's own (``used_cpu_user + used_cpu_sys``), and each process
    #: of the worker command's (``main``: the command itself, ``workers``: what it started).
    cpu: dict[str, float] = field(default_factory=dict)
    #: What ``drain``'s ``probe`` read at the same moment (the PostgreSQL comparison's server).
    probe: Any = None


def snapshot(
    client: redis.Redis,
    session: int | None = None,
    probe: Callable[[], Any] | None = None,
    tally: redis.Redis | None = None,
) -> Snapshot:
    """Redis's counters and the jobs done (read from ``tally``, the counting server, when the
    tasks count on one of their own; else from ``client``'s)."""
    if tally is None:
        pipe = client.pipeline(transaction=False)
        pipe.get(DONE)
        pipe.info("everything")
        done, info = pipe.execute()
    else:
        done, info = tally.get(DONE), client.info("everything")
    commands = {key[8:]: int(value["calls"]) for key, value in info.items() if key.startswith("cmdstat_")}
    cpu = {"redis": float(info["used_cpu_user"]) + float(info["used_cpu_sys"])}
    if session is not None:
        pids = session_pids(session)
        cpu["main"] = cpu_seconds([pid for pid in pids if pid == session])
        cpu["workers"] = cpu_seconds([pid for pid in pids if pid != session])
    return Snapshot(
        time.perf_counter(),
        int(done or 0),
        commands,
        int(info["total_reads_processed"]),
        int(info["used_memory"]),
        cpu,
        probe() if probe is not None else None,
    )


def reset(client: redis.Redis, tally: redis.Redis | None = None) -> None:
    for server in (client, tally):
        if server is not None:
            server.flushall()
            server.config_resetstat()


# -- processes -----------------------------------------------------------------------------------


class Runner:
    """Runs the driver for one peer, with the peer's interpreter and environment."""

    def __init__(
        self,
        peer: Peer,
        python: Path,
        url: str,
        logs: Path,
        env: dict[str, str],
        *,
        tally_url: str | None = None,
    ) -> None:
        self.peer, self.python, self.logs = peer, python, logs
        self.env = {**os.environ, **env, "BENCH_REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
        if tally_url is not None:
            self.env["BENCH_TALLY_URL"] = tally_url
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
        logs.mkdir(parents=True, exist_ok=True)

    def argv(self, action: str, *args: str) -> list[str]:
        return [str(self.python), str(HERE / "driver.py"), self.peer.module, action, *args]

    def call(self, action: str, *args: str, timeout: float = 300) -> dict[str, Any]:
        log = self.logs / f"{self.peer.name}-{action}.log"
        try:
            done = subprocess.run(
                self.argv(action, *args),
                check=False,
                env=self.env,
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise PeerFailed(f"{action} took over {timeout:g} s") from exc
        log.write_text(f"$ {' '.join(self.argv(action, *args))}\n{done.stdout}\n{done.stderr}")
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise PeerFailed(f"{action} failed: {last_line(done.stderr)} (see {log})")
        result: dict[str, Any] = json.loads(lines[-1])
        if "error" in result:
            raise PeerFailed(f"{action}: {result['error']}")
        return result

    @contextlib.contextmanager
    def workers(self) -> Iterator[subprocess.Popen[bytes]]:
        """The peer's worker processes, in a session of their own, all ended on exit."""
        log = (self.logs / f"{self.peer.name}-worker.log").open("wb")
        process = subprocess.Popen(
            self.argv("worker", "--workers", str(WORKERS)),
            env=self.env,
            cwd=HERE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop_session(process)
            log.close()


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def session_pids(sid: int) -> list[int]:
    """Every process in session ``sid`` (the worker command and whatever it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session ...
            pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime stime
    return total / ticks


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def stop_session(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker session (warm stop), then SIGKILL whatever is left."""
    sid = process.pid
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        pids = session_pids(sid)
        if not pids and process.poll() is not None:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()
            if not session_pids(sid):
                process.wait()
                return
            time.sleep(0.05)


# -- one peer ------------------------------------------------------------------------------------


def per_job(before: Snapshot, after: Snapshot, jobs: int, own_cmds: int, own_reads: int) -> dict[str, Any]:
    commands = {
        name: after.commands.get(name, 0) - before.commands.get(name, 0)
        for name in after.commands
        if name != "info"
    }
    commands = {name: calls for name, calls in commands.items() if calls > 0}
    if "get" in commands:
        commands["get"] -= own_cmds
    total = sum(commands.values())
    return {
        "commands_per_job": total / jobs,
        "round_trips_per_job": (after.reads - before.reads - own_reads) / jobs,
        "command_mix": {
            name: round(calls / jobs, 3) for name, calls in sorted(commands.items()) if calls > 0
        },
    }


def cpu_per_job(first: Snapshot, last: Snapshot, jobs: int) -> dict[str, float]:
    """Microseconds of CPU per job in the window: Redis's, the worker command's own process
    (``main``: a supervisor or manager), the processes it started (``workers``), and their
    sum (``total``). A process that ended in the window is left out (its time is lost)."""
    spent = {role: 1e6 * (last.cpu[role] - first.cpu.get(role, 0.0)) / jobs for role in last.cpu}
    spent["total"] = sum(spent.values())
    return {role: round(value, 1) for role, value in spent.items()}


def drain(
    client: redis.Redis,
    process: subprocess.Popen[bytes],
    jobs: int,
    *,
    stall: float,
    probe: Callable[[], pgserver.Probe] | None = None,
    tally: redis.Redis | None = None,
) -> dict[str, Any]:
    """Wait for ``jobs`` to be done, measuring the window between WINDOW's marks (with
    ``probe``, also the PostgreSQL server's write transactions, WAL and CPU per job; with
    ``tally``, the jobs are counted there and ``client``'s figures are the queue's alone)."""
    counter = client if tally is None else tally
    low, high = (max(1, int(jobs * f)) for f in WINDOW)
    first = last = None
    polls = 0
    progress_at, seen = time.monotonic(), -1
    sid = process.pid
    zero = snapshot(client, sid, probe, tally)
    started = zero.at
    while True:
        done = int(counter.get(DONE) or 0)
        if first is not None and last is None:
            polls += 1
        if first is None and done >= low:
            first = snapshot(client, sid, probe, tally)
            done = first.done
        elif first is not None and last is None and done >= high:
            last = snapshot(client, sid, probe, tally)
            done = last.done
        if done >= jobs:
            break
        if done != seen:
            progress_at, seen = time.monotonic(), done
        elif time.monotonic() - progress_at > stall:
            raise PeerFailed(f"drain stalled at {done}/{jobs} jobs for {stall:g} s")
        if process.poll() is not None:
            raise PeerFailed(f"the worker exited with {process.returncode} at {done}/{jobs} jobs")
        time.sleep(POLL)
    total = time.perf_counter() - started
    if first is None or last is None or last.done <= first.done:  # too few jobs for a window
        first, last, polls = zero, snapshot(client, sid, probe, tally), polls + 1
    counted = last.done - first.done
    result = {
        "drain_per_s": counted / (last.at - first.at) if last.at > first.at else float("nan"),
        "drain_total_s": total,
        "cpu_us_per_job": cpu_per_job(first, last, counted),
    }
    # The harness's own requests in the window: one GET per poll, plus the last snapshot's
    # (none on the queue's server when the jobs are counted on another).
    own = 0 if tally is not None else polls + 1
    result.update(per_job(first, last, counted, own_cmds=own, own_reads=own))
    if probe is not None:
        result.update(pgserver.per_job(first.probe, last.probe, counted))
    return result


def measure(
    peer: Peer, client: redis.Redis, sizes: Sizes, args: argparse.Namespace, logs: Path, *, tally: redis.Redis
) -> dict[str, Any]:
    """The no-op table's row of one peer; its queue on ``client``'s server, its tasks
    counting on ``tally``'s, so that Redis's figures are the queue's own."""
    try:
        python = venvs.ensure(peer, reinstall=args.reinstall)
    except venvs.InstallFailed as exc:
        raise PeerFailed(f"install failed: {exc}") from exc
    env = {"BENCH_QW_PREFETCH": str(args.qw_prefetch)} if args.qw_prefetch else {}
    runner = Runner(peer, python, url_of(client), logs, env, tally_url=url_of(tally))
    out: dict[str, Any] = {}
    info = runner.call("info", timeout=120)
    out["version"] = info["version"]

    reset(client, tally)
    result = runner.call("enqueue", "--n", str(sizes.single))
    out["enqueue_per_s"] = sizes.single / result["seconds"]
    after = snapshot(client)
    out["enqueue_round_trips_per_job"] = after.reads / sizes.single
    if tally.get(DONE) is not None:
        raise PeerFailed("jobs ran with no worker started")

    reset(client, tally)
    base = snapshot(client).used_memory
    if info["bulk"]:
        result = runner.call("enqueue", "--n", str(sizes.drain), "--bulk")
        out["bulk_per_s"] = sizes.drain / result["seconds"]
    else:
        runner.call("enqueue", "--n", str(sizes.drain))
    out["memory_per_job"] = (snapshot(client).used_memory - base) / sizes.drain
    client.config_resetstat()

    with runner.workers() as process:
        out.update(drain(client, process, sizes.drain, stall=args.stall, tally=tally))
        time.sleep(1.0)  # let the workers settle into their idle wait
        pids = session_pids(process.pid)
        out["processes"] = len(pids)
        out["rss_mb"] = rss_mb(pids)
        cpu = cpu_seconds(pids)
        idle_started = time.perf_counter()
        time.sleep(2.0)
        out["idle_cpu_percent"] = 100 * (cpu_seconds(pids) - cpu) / (time.perf_counter() - idle_started)
        queues = ["shared", "manager"] if peer.name == "qw" else ["shared"]
        for queue in queues:
            result = runner.call("latency", "--n", str(sizes.latency), "--queue", queue)
            samples = sorted(result["samples"])
            key = "latency" if queue == "shared" else "latency_manager"
            out[key] = {
                "p50_ms": 1000 * statistics.median(samples),
                "p99_ms": 1000 * samples[min(len(samples) - 1, int(len(samples) * 0.99))],
                "max_ms": 1000 * samples[-1],
            }
        if process.poll() is not None:
            raise PeerFailed(f"the worker exited with {process.returncode}")
    return out


def measure_io(
    peer: Peer, client: redis.Redis, jobs: int, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    """I/O mode: drain ``jobs`` that each wait ``args.io`` ms, with the peer's concurrency setting."""
    try:
        python = venvs.ensure(peer, reinstall=args.reinstall)
    except venvs.InstallFailed as exc:
        raise PeerFailed(f"install failed: {exc}") from exc
    env = {"BENCH_IO_MS": f"{args.io:g}", "BENCH_QW_CONCURRENCY": str(args.qw_concurrency or ""), **peer.env}
    if args.qw_prefetch:
        env["BENCH_QW_PREFETCH"] = str(args.qw_prefetch)
    runner = Runner(peer, python, url_of(client), logs, env)
    info = runner.call("info", timeout=120)
    out: dict[str, Any] = {"version": info["version"]}
    if info.get("concurrency"):
        per_process = info["concurrency"]["per_process"]
        out["concurrency"] = info["concurrency"]["setting"]
        out["in_flight"] = per_process * WORKERS
        if args.io > 0:
            out["ideal_per_s"] = out["in_flight"] * 1000 / args.io
            if not args.jobs:
                jobs = max(jobs, min(FULL.drain, int(round(out["ideal_per_s"] * IO_IDEAL_SECONDS, -2))))
    out["jobs"] = jobs

    try:
        reset(client)
        runner.call("enqueue", "--n", str(jobs), *(["--bulk"] if info["bulk"] else []))
        if client.get(DONE) is not None:
            raise PeerFailed("jobs ran with no worker started")
        client.config_resetstat()
        with runner.workers() as process:
            try:
                # A drain of long waits may make no progress for a while without being stuck.
                out.update(drain(client, process, jobs, stall=max(args.stall, 3 * args.io / 1000)))
            except PeerFailed as exc:
                log = logs / f"{peer.name}-worker.log"
                tail = last_line(log.read_text(errors="replace")) if log.exists() else "no log"
                raise PeerFailed(f"{exc}; the worker's log ends: {tail}") from exc
            pids = session_pids(process.pid)
            out["processes"] = len(pids)
            out["rss_mb"] = rss_mb(pids)
    except PeerFailed as exc:
        raise PeerFailed(str(exc), details=out) from exc
    if "ideal_per_s" in out:
        out["share_of_ideal"] = out["drain_per_s"] / out["ideal_per_s"]
    return out


# -- the PostgreSQL comparison (--backend postgres) -----------------------------------------------


def pg_runner(
    peer: Peer, client: redis.Redis, server: pgserver.Server, args: argparse.Namespace, logs: Path
) -> Runner:
    """The peer's runner, its ``BENCH_PG_URL`` its own database; its schema's template made
    once a run (``driver.py setup`` in an empty database that each phase copies)."""
    try:
        python = venvs.ensure(peer, reinstall=args.reinstall)
    except venvs.InstallFailed as exc:
        raise PeerFailed(f"install failed: {exc}") from exc
    env = {**peer.env, "BENCH_PG_URL": server.url(pgserver.database(peer.name))}
    if args.io is not None:
        env.update(BENCH_IO_MS=f"{args.io:g}", BENCH_QW_CONCURRENCY=str(args.qw_concurrency or ""))
    if args.qw_prefetch:
        env["BENCH_QW_PREFETCH"] = str(args.qw_prefetch)
    if peer.name not in _templates:
        pgserver.new_template(server, peer.name)
        setup_env = {**env, "BENCH_PG_URL": server.url(pgserver.template(peer.name))}
        Runner(peer, python, url_of(client), logs, setup_env).call("setup", timeout=120)
        _templates.add(peer.name)
    return Runner(peer, python, url_of(client), logs, env)


def with_cpu(
    prober: pgserver.Prober, server: pgserver.Server, process: subprocess.Popen[bytes]
) -> Callable[[], pgserver.Probe]:
    """``prober``, with the CPU seconds of the server's processes and the worker's."""

    def probe() -> pgserver.Probe:
        found = prober()
        found.server_cpu = cpu_seconds(pgserver.server_pids(server))
        found.worker_cpu = cpu_seconds(session_pids(process.pid))
        return found

    return probe


#: The peers whose template database this run has made.
_templates: set[str] = set()


def measure_pg(
    peer: Peer,
    client: redis.Redis,
    sizes: Sizes,
    args: argparse.Namespace,
    logs: Path,
    *,
    server: pgserver.Server,
) -> dict[str, Any]:
    """:func:`measure` for a PostgreSQL peer: each phase on a fresh copy of its database;
    the drain's per-job figures are the server's write transactions and WAL."""
    runner = pg_runner(peer, client, server, args, logs)
    out: dict[str, Any] = {}
    info = runner.call("info", timeout=120)
    out["version"] = info["version"]

    reset(client)
    pgserver.fresh(server, peer.name)
    result = runner.call("enqueue", "--n", str(sizes.single))
    out["enqueue_per_s"] = sizes.single / result["seconds"]
    if client.get(DONE) is not None:
        raise PeerFailed("jobs ran with no worker started")

    reset(client)
    pgserver.fresh(server, peer.name)
    prober = pgserver.Prober(server, pgserver.database(peer.name))
    try:
        base = prober().size
        if info["bulk"]:
            result = runner.call("enqueue", "--n", str(sizes.drain), "--bulk")
            out["bulk_per_s"] = sizes.drain / result["seconds"]
        else:
            runner.call("enqueue", "--n", str(sizes.drain))
        out["memory_per_job"] = (prober().size - base) / sizes.drain
        with runner.workers() as process:
            out.update(
                drain(client, process, sizes.drain, stall=args.stall, probe=with_cpu(prober, server, process))
            )
            time.sleep(1.0)  # let the workers settle into their idle wait
            pids = session_pids(process.pid)
            out["processes"] = len(pids)
            out["rss_mb"] = rss_mb(pids)
            cpu = cpu_seconds(pids)
            idle_started = time.perf_counter()
            time.sleep(2.0)
            out["idle_cpu_percent"] = 100 * (cpu_seconds(pids) - cpu) / (time.perf_counter() - idle_started)
            result = runner.call("latency", "--n", str(sizes.latency))
            samples = sorted(result["samples"])
            out["latency"] = {
                "p50_ms": 1000 * statistics.median(samples),
                "p99_ms": 1000 * samples[min(len(samples) - 1, int(len(samples) * 0.99))],
                "max_ms": 1000 * samples[-1],
            }
            if process.poll() is not None:
                raise PeerFailed(f"the worker exited with {process.returncode}")
    finally:
        prober.close()
    return out


def measure_pg_io(
    peer: Peer,
    client: redis.Redis,
    jobs: int,
    args: argparse.Namespace,
    logs: Path,
    *,
    server: pgserver.Server,
) -> dict[str, Any]:
    """:func:`measure_io` for a PostgreSQL peer (a fresh copy of its database)."""
    runner = pg_runner(peer, client, server, args, logs)
    info = runner.call("info", timeout=120)
    out: dict[str, Any] = {"version": info["version"]}
    setting = info.get("concurrency") or {}
    out["concurrency"] = setting.get("setting", "?")
    if setting.get("per_process"):
        out["in_flight"] = setting["per_process"] * WORKERS
        if args.io > 0:
            out["ideal_per_s"] = out["in_flight"] * 1000 / args.io
            if not args.jobs:
                jobs = max(jobs, min(FULL.drain, int(round(out["ideal_per_s"] * IO_IDEAL_SECONDS, -2))))
    elif not args.jobs:  # no limit: as many as the largest limit measured
        jobs = max(jobs, min(FULL.drain, int(round(200 * 1000 / max(args.io, 2.0) * IO_IDEAL_SECONDS, -2))))
    out["jobs"] = jobs
    try:
        reset(client)
        pgserver.fresh(server, peer.name)
        runner.call("enqueue", "--n", str(jobs), *(["--bulk"] if info["bulk"] else []))
        if client.get(DONE) is not None:
            raise PeerFailed("jobs ran with no worker started")
        prober = pgserver.Prober(server, pgserver.database(peer.name))
        try:
            with runner.workers() as process:
                try:
                    out.update(
                        drain(
                            client,
                            process,
                            jobs,
                            stall=max(args.stall, 3 * args.io / 1000),
                            probe=with_cpu(prober, server, process),
                        )
                    )
                except PeerFailed as exc:
                    log = logs / f"{peer.name}-worker.log"
                    tail = last_line(log.read_text(errors="replace")) if log.exists() else "no log"
                    raise PeerFailed(f"{exc}; the worker's log ends: {tail}") from exc
                pids = session_pids(process.pid)
                out["processes"] = len(pids)
                out["rss_mb"] = rss_mb(pids)
        finally:
            prober.close()
    except PeerFailed as exc:
        raise PeerFailed(str(exc), details=out) from exc
    if "ideal_per_s" in out:
        out["share_of_ideal"] = out["drain_per_s"] / out["ideal_per_s"]
    return out


def median_of(runs: list[Any]) -> Any:
    """The median of each number across ``runs`` (dicts of the same shape); else the first value."""
    first = runs[0]
    if isinstance(first, dict):
        keys = {key for run in runs for key in run}
        return {key: median_of([run[key] for run in runs if key in run]) for key in sorted(keys)}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(runs)
    return first


def combine(runs: list[dict[str, Any]], errors: list[str]) -> dict[str, Any]:
    """One peer's row: the median of the runs that worked, or the first error."""
    if not runs:
        return {"error": errors[0] if errors else "not measured"}
    result: dict[str, Any] = median_of(runs)
    result["runs"] = len(runs)
    result["drain_per_s_each_run"] = [run["drain_per_s"] for run in runs]
    if errors:
        result["failed_runs"] = errors
    return result


# -- the table -----------------------------------------------------------------------------------

COLUMNS = (
    ("peer", 14),
    ("delivery", 22),
    ("enqueue/s", 9),
    ("bulk/s", 8),
    ("drain/s", 8),
    ("cmds/job", 8),
    ("rt/job", 6),
    ("p50 ms", 6),
    ("p99 ms", 6),
    ("RSS MB", 8),
    ("idle CPU", 8),
    ("B/job", 6),
    ("qw drain x", 10),
    ("qw enq x", 8),
    ("qw p50 x", 8),
)


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


def best_enqueue(row: dict[str, Any]) -> float | None:
    rates = [row.get("enqueue_per_s"), row.get("bulk_per_s")]
    return max((rate for rate in rates if rate), default=None)


#: The two per-job columns of a drain: Redis's commands and round trips, or (the PostgreSQL
#: comparison) the server's write transactions and WAL bytes.
REDIS_METRICS = (("cmds/job", "commands_per_job", 2), ("rt/job", "round_trips_per_job", 2))
#: The I/O table's: Redis's commands and round trips, and the CPU per job of Redis and of
#: the worker command's processes.
REDIS_IO_METRICS = (*REDIS_METRICS, ("CPU µs/job", "cpu_us_per_job", None))
PG_METRICS = (
    ("xacts/job", "xacts_per_job", 2),
    ("WAL B/job", "wal_bytes_per_job", 0),
    ("CPU µs/job", "cpu_us_per_job", 0),
)


def table(
    results: dict[str, dict[str, Any]], ref: str = "qw", metrics: tuple[Any, ...] = REDIS_METRICS
) -> str:
    """The no-op table; the ratio columns are ``ref``'s row over each other row."""
    qw = results.get(ref, {})
    names = [name for name, _ in COLUMNS]
    names[5:7] = [label for label, _, _ in metrics]
    lines = [
        "| " + " | ".join(names) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(names))) + "|",
    ]
    for name, row in results.items():
        peer = PEERS[name]
        if "error" in row:
            cells = [name, peer.delivery, f"**{row['error']}**"] + [""] * (len(names) - 3)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        lat = row.get("latency", {})
        cells = [
            name,
            peer.delivery,
            fmt(row.get("enqueue_per_s")),
            fmt(row.get("bulk_per_s")),
            fmt(row.get("drain_per_s")),
            *(fmt(row.get(key), digits) for _, key, digits in metrics),
            fmt(lat.get("p50_ms"), 2),
            fmt(lat.get("p99_ms"), 2),
            f"{fmt(row.get('rss_mb'))} ({fmt(row.get('processes'))})",
            f"{fmt(row.get('idle_cpu_percent'), 1)}%",
            fmt(row.get("memory_per_job")),
            "" if name == ref else ratio(qw.get("drain_per_s"), row.get("drain_per_s")),
            "" if name == ref else ratio(best_enqueue(qw), best_enqueue(row)),
            "" if name == ref else ratio(lat.get("p50_ms"), qw.get("latency", {}).get("p50_ms")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if "latency_manager" in row:
            lat = row["latency_manager"]
            cells = [f"{name} `<m>:jobs`", "", *[""] * 5, fmt(lat["p50_ms"], 2), fmt(lat["p99_ms"], 2)]
            lines.append("| " + " | ".join(cells + [""] * (len(names) - len(cells))) + " |")
    return "\n".join(lines)


IO_COLUMNS = (
    "peer",
    "concurrency (per process)",
    "in flight",
    "jobs",
    "drain/s",
    "of ideal",
    # (the per-job figures of the backend go here: REDIS_IO_METRICS or PG_METRICS)
    "RSS MB",
    "qw x",
)


def cpu_cell(cpu: dict[str, float] | float | None) -> str:
    """``total (Redis + the worker command's processes)``, in µs of CPU per job (a number
    alone: the PostgreSQL comparison's server and workers together)."""
    if cpu is None or cpu == {}:
        return "-"
    if not isinstance(cpu, dict):
        return fmt(cpu)
    return f"{fmt(cpu['total'])} ({fmt(cpu['redis'])} + {fmt(cpu.get('main', 0) + cpu.get('workers', 0))})"


def metric_cell(row: dict[str, Any], key: str, digits: int | None) -> str:
    """One per-job figure of a row (``digits`` ``None``, or a row measured on Redis in the
    PostgreSQL table: the CPU per job in its parts, :func:`cpu_cell`)."""
    value = row.get(key)
    return cpu_cell(value) if digits is None or isinstance(value, dict) else fmt(value, digits)


def io_table(
    results: dict[str, dict[str, Any]], ref: str = "qw", metrics: tuple[Any, ...] = REDIS_METRICS
) -> str:
    """The I/O mode's table: each peer's concurrency setting, drain rate and ``ref``'s ratio to it."""
    qw = results.get(ref, {})
    names = list(IO_COLUMNS)
    names[6:6] = [label for label, _, _ in metrics]
    lines = [
        "| " + " | ".join(names) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(names))) + "|",
    ]
    for name, row in results.items():
        setting = str(row.get("concurrency", "?"))
        if "error" in row:
            cells = [name, setting, fmt(row.get("in_flight")), f"**{row['error']}**"]
            lines.append("| " + " | ".join(cells + [""] * (len(names) - len(cells))) + " |")
            continue
        share = row.get("share_of_ideal")
        cells = [
            name,
            setting,
            fmt(row.get("in_flight")),
            fmt(row.get("jobs")),
            fmt(row.get("drain_per_s")),
            "-" if share is None else f"{100 * share:.0f}%",
            *(metric_cell(row, key, digits) for _, key, digits in metrics),
            f"{fmt(row.get('rss_mb'))} ({fmt(row.get('processes'))})",
            "" if name == ref else ratio(qw.get("drain_per_s"), row.get("drain_per_s")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versions(results: dict[str, dict[str, Any]]) -> str:
    return "\n".join(f"  {name}: {row['version']}" for name, row in results.items() if row.get("version"))


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--peers", help=f"comma-separated, from: {', '.join(PEERS)} (default: all; qw-sync only with --io)"
    )
    parser.add_argument("--quick", action="store_true", help="small N, qw only unless --peers (CI smoke)")
    parser.add_argument(
        "--jobs",
        type=int,
        help="jobs per drain (default 20,000; --quick 1,000; with --io: 40,000 / MS, 2,000 at 20 ms, "
        "from 200 to 20,000, and more for a peer with many jobs in flight: 2 s at its ideal rate, at most "
        "20,000; --quick a tenth of that, from 100 to 1,000)",
    )
    parser.add_argument("--single", type=int, help="jobs queued one call each (default 5,000)")
    parser.add_argument("--latency", type=int, help="latency samples (default 300)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds over all peers; the table shows each one's medians"
    )
    parser.add_argument("--qw-prefetch", type=int, help="qw run --prefetch (default: qw's default)")
    parser.add_argument(
        "--io",
        type=non_negative,
        metavar="MS",
        help="I/O mode: every job waits MS milliseconds (time.sleep, or asyncio.sleep in async peers); "
        "measures the drain only, each peer with its concurrency setting for such work",
    )
    parser.add_argument(
        "--qw-concurrency",
        type=positive,
        default=None,
        metavar="N",
        help="with --io: qw run --concurrency N, jobs awaited at once per worker process "
        "(default: qw's own default, 100 for an async def target)",
    )
    parser.add_argument("--json", nargs="?", const="", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--results", default=str(RESULTS), help="where logs and --json go (bench/results)")
    parser.add_argument("--redis-server", default="redis-server", help="the redis-server binary")
    parser.add_argument(
        "--backend",
        choices=("redis", "postgres"),
        default="redis",
        help="redis: qw and the Redis job queues; postgres: qw-postgres and the PostgreSQL job queues "
        "(procrastinate, pgqueuer) on a private PostgreSQL cluster (the task's INCR on the private Redis)",
    )
    parser.add_argument(
        "--pg-bin",
        default=pgserver.PG_BIN,
        help=f"where PostgreSQL's initdb and postgres are (default {pgserver.PG_BIN})",
    )
    parser.add_argument("--reinstall", action="store_true", help="rebuild the peers' virtualenvs")
    parser.add_argument("--stall", type=float, default=60.0, help="fail a drain making no progress this long")
    return parser.parse_args(argv)


def non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"not a number of milliseconds >= 0: {text}")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a whole number >= 1: {text}")
    return value


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: the workers and redis-server are stopped on the way


def sizes_of(args: argparse.Namespace) -> Sizes:
    if args.io is not None:  # the drain only
        return Sizes(single=0, drain=args.jobs or io_jobs(args.io, args.quick), latency=0)
    base = QUICK if args.quick else FULL
    return Sizes(
        single=args.single or base.single, drain=args.jobs or base.drain, latency=args.latency or base.latency
    )


def run_rounds(
    names: list[str],
    client: redis.Redis,
    sizes: Sizes,
    args: argparse.Namespace,
    logs: Path,
    *,
    server: pgserver.Server | None = None,
    tally: redis.Redis | None = None,
) -> dict[str, dict[str, Any]]:
    """Measure each peer ``args.repeat`` times; one row each (medians, or why it failed).
    ``tally``: the no-op table's counting server (its tasks count there, not on ``client``'s)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    errors: dict[str, list[str]] = {name: [] for name in names}
    details: dict[str, dict[str, Any]] = {name: {} for name in names}
    # Round by round (every peer once, then again), so that a busy spell on the
    # machine falls on all of them rather than on one peer's runs.
    for round_ in range(1, args.repeat + 1):
        for name in names:
            if errors[name] and errors[name][-1].startswith("install failed"):
                continue
            label = f"{name} (run {round_}/{args.repeat})" if args.repeat > 1 else name
            print(f"bench: {label} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                peer = PEERS[name]
                if peer.backend == "any":  # the no-queue reference row: its jobs are in Redis
                    runs[name].append(measure_io(peer, client, sizes.drain, args, logs))
                elif server is not None and args.io is not None:
                    runs[name].append(measure_pg_io(peer, client, sizes.drain, args, logs, server=server))
                elif server is not None:
                    runs[name].append(measure_pg(peer, client, sizes, args, logs, server=server))
                elif args.io is not None:
                    runs[name].append(measure_io(PEERS[name], client, sizes.drain, args, logs))
                else:
                    runs[name].append(measure(PEERS[name], client, sizes, args, logs, tally=tally))
                outcome = f"{fmt(runs[name][-1]['drain_per_s'])} jobs/s drain"
            except Exception as exc:  # a bug in one adapter must not lose the others' results
                reason = str(exc) if isinstance(exc, PeerFailed) else f"{type(exc).__name__}: {exc}"
                errors[name].append(reason)
                details[name] = getattr(exc, "details", {})
                outcome = reason
            elapsed = time.monotonic() - started
            print(f"bench: {label}: {outcome} ({elapsed:.0f} s)", file=sys.stderr, flush=True)
    results = {name: combine(runs[name], errors[name]) for name in names}
    for name, row in results.items():
        if "error" in row:  # with what is known of a peer that failed (I/O mode: its concurrency)
            results[name] = {**details[name], **row}
    return results


def results_table(results: dict[str, dict[str, Any]], ref: str, *, io: bool, pg: bool) -> str:
    """The table of a run: the I/O mode's or the no-op one, with its backend's figures."""
    if io:
        return io_table(results, ref, PG_METRICS if pg else REDIS_IO_METRICS)
    return table(results, ref, PG_METRICS if pg else REDIS_METRICS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background
        signal.signal(signal.SIGINT, _stop)
    io = args.io is not None
    pg = args.backend == "postgres"
    ref = "qw-pg" if pg else "qw"
    sizes = sizes_of(args)
    known = [
        name
        for name, peer in PEERS.items()
        if (io or not peer.io_only) and peer.backend in (args.backend, "any")
    ]
    if args.peers:
        names = args.peers.split(",")
    elif args.quick:  # qw's own, nothing to install
        names = [ref, f"{ref}-sync"] if io else [ref]
    else:
        names = known
    unknown = [name for name in names if name not in known]
    if unknown:
        why = "; ".join(f"{name} runs only with --io" for name in unknown if name in PEERS)
        print(f"bench: unknown peer(s) {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        if why:
            print(f"bench: {why}", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir = Path(args.results)
    logs = results_dir / "logs" / stamp
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(private_redis(args.redis_server))
        server = client.info("server")
        machine = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "redis": server["redis_version"],
            "platform": platform.platform(),
            "load_before": load_average(),
        }
        pg_server = stack.enter_context(pgserver.private_postgres(args.pg_bin)) if pg else None
        if pg_server is not None:
            machine["postgres"] = pgserver.describe(pg_server)
            print(f"bench: {machine['postgres']}", file=sys.stderr)
        print(
            f"bench: {machine['cpus']} CPUs, Python {machine['python']}, Redis {machine['redis']} "
            f"at {url_of(client)}; {WORKERS} workers; {sizes.drain:,} jobs per drain"
            + (f", each waiting {args.io:g} ms (I/O mode)" if io else ""),
            file=sys.stderr,
        )
        # The no-op table's tasks count their jobs on a second private Redis, so that the
        # commands and round trips the table shows are the queue's alone.
        tally = stack.enter_context(private_redis(args.redis_server)) if not (pg or io) else None
        results = run_rounds(names, client, sizes, args, logs, server=pg_server, tally=tally)
        machine["load_after"] = load_average()
    print(results_table(results, ref, io=io, pg=pg))
    print(f"\nversions:\n{versions(results)}")
    print(
        f"machine: {machine['cpus']} CPUs, Python {machine['python']}, Redis {machine['redis']}, "
        f"{machine['platform']}; load average (1, 5, 15 min) {machine['load_before']} before, "
        f"{machine['load_after']} after"
    )
    if pg:
        print(f"server: {machine['postgres']}; the task's INCR on the private Redis")
    if args.json is not None:
        path = Path(args.json) if args.json else results_dir / f"bench-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "backend": args.backend,
            "machine": machine,
            "sizes": sizes.__dict__,
            "workers": WORKERS,
            "repeat": args.repeat,
            "qw_prefetch": args.qw_prefetch,
            "results": results,
        }
        if io:
            document.update(io_ms=args.io, qw_concurrency=args.qw_concurrency)
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results: {path}", file=sys.stderr)
    draw_charts({"results": results, **({"io_ms": args.io} if io else {})}, results_dir / f"charts-{stamp}")
    return 0


def load_average() -> str:
    """The machine's load average (1, 5 and 15 minutes), as ``uptime`` shows it."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "?"


def draw_charts(document: dict[str, Any], folder: Path) -> None:
    """The run's charts as SVG (charts.py), where matplotlib is installed (``nox -s bench``)."""
    try:
        written = write_charts(document, folder)
    except ImportError as exc:  # matplotlib: python bench/run.py from an environment without it
        print(f"no charts ({exc}; nox -s bench installs matplotlib)", file=sys.stderr)
        return
    for path in written:
        print(f"chart: {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
