"""What qw costs as a backlog grows (issue 22): one table, measured in one run.

    python bench/backlog.py                      # the full sizes (about 3-5 minutes)
    python bench/backlog.py --quick              # sizes 10-100x smaller: a smoke run (< 1 min)
    python bench/backlog.py --only jobs,status --json

One private ``redis-server`` (a free port, no persistence, Redis's default ``hz 10``) serves
every phase; qw runs with the interpreter running this script, through its public
interfaces only: the ``qw`` command and the ``qw_core``/``qw_redis`` Python API. The phases
(``--only`` picks some; each sets up the state it needs):

* ``enqueue``: ``queue_jobs`` rate and Redis memory per queued job at each size, and the
  time Redis spends in each ``queue.lua`` call (1,000 jobs a call);
* ``jobs``: ``qw jobs`` (its first page), ``qw jobs --all`` and ``--all --json`` with the
  backlog queued;
* ``drain``: 2 workers (``qw run -w 2``) on no-op jobs with the backlog queued, on the
  drain size, and on jobs that fail (their target raises); Redis commands per job; what
  the idle workers cost in Redis commands a second;
* ``status``: the delayed jobs queued (``queue_delayed.lua`` per call), then ``qw status``
  with no manager and with 10 registered, and one Prometheus scrape of a running manager;
* ``failed``: the failed registry filled (``fail.lua`` per call), then ``qw failed``,
  ``qw failed requeue --all`` and ``qw failed purge --all``; ``fail.lua`` at the default
  bound, where each call also trims the registry;
* ``lateness``: delayed jobs queued one at a time to 2 idle workers, each due 50 ms,
  200 ms, 1 s or a random time ahead, then 20 a second at random (several waiting at
  once); how late each started.

For a ``qw`` command: its wall time, its peak RSS, and the longest single Redis command
while it ran (``INFO latencystats``' p100, with the statistics reset just before). Nothing
here asserts a time: the numbers are for a reader, and for a later change that brings an
O(n) back to show up in.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import redis  # noqa: E402
from backlog_targets import BenchFailure  # noqa: E402
from peers.common import DONE, LATENCY  # noqa: E402
from probes import CommandRun, CommandStats, RedisWindow, percentile, run_command, track_max_latency  # noqa: E402
from run import drain, free_port, per_job, private_redis, snapshot, stop_session, url_of  # noqa: E402

from qw_core import Job  # noqa: E402
from qw_core.models import Failure  # noqa: E402
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits  # noqa: E402
from qw_redis import RedisBroker  # noqa: E402

RESULTS = HERE / "results"
#: The manager name ``qw run`` runs under, and the one jobs are taken for when failing them.
MANAGER = "bench"
WORKERS = 2
#: Jobs per ``queue_jobs`` call when filling a queue (qw sends them 1,000 a script call).
CHUNK = 10_000
#: Most jobs one ``take`` hands out (``RedisBroker.capabilities.max_take``).
TAKE = 100
#: The delay of the jobs ``qw status`` counts: none comes due during the run.
FAR = 3600.0
#: Pause before each lateness job, so that both workers are idle and blocked.
GAP = 0.02
#: Delayed jobs queued a second (at random times) for the lateness of overlapping waits.
ARRIVALS = 20.0
#: A drain making no progress for this long has failed.
STALL = 60.0
#: The longest a ``qw`` command may run.
COMMAND_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Sizes:
    enqueue: tuple[int, ...]  # jobs queued, one measurement each
    backlog: int  # jobs queued for ``qw jobs`` and the drain beside a backlog
    delayed: int  # delayed jobs ``qw status`` counts
    managers: int  # managers registered for the second ``qw status``
    failed: int  # jobs in the failed registry for ``qw failed requeue/purge --all``
    drain: int  # jobs per drain
    lateness: tuple[tuple[str, float | None, int], ...]  # (label, delay or None: random, samples)
    overlapping: int  # delayed jobs queued without waiting for the one before


FULL = Sizes(
    enqueue=(10_000, 100_000, 1_000_000),
    backlog=1_000_000,
    delayed=100_000,
    managers=10,
    failed=100_000,
    drain=20_000,
    lateness=(("50 ms", 0.05, 60), ("200 ms", 0.2, 40), ("1 s", 1.0, 15), ("random 10 ms-1 s", None, 40)),
    overlapping=200,
)
QUICK = Sizes(
    enqueue=(1_000, 10_000),
    backlog=10_000,
    delayed=10_000,
    managers=10,
    failed=1_000,
    drain=2_000,
    lateness=(("50 ms", 0.05, 4), ("200 ms", 0.2, 3), ("1 s", 1.0, 1), ("random 10 ms-1 s", None, 3)),
    overlapping=10,
)


@dataclass
class Row:
    metric: str
    size: str
    value: float | None
    unit: str
    note: str = ""
    phase: str = ""


class Bench:
    """What the phases share: the private Redis, a broker on it, the ``qw`` command, the rows."""

    def __init__(self, client: redis.Redis, sizes: Sizes, logs: Path) -> None:
        self.client, self.sizes, self.logs = client, sizes, logs
        self.url = url_of(client)
        self.broker = RedisBroker.from_url(self.url)
        self.qw = str(Path(sys.executable).with_name("qw"))
        self.rows: list[Row] = []
        self.phase = ""  # the phase running, for its rows
        self.details: dict[str, Any] = {}
        env = {key: value for key, value in os.environ.items() if not key.startswith("QW_")}
        path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
        self.env = {**env, "BENCH_REDIS_URL": self.url, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        self._sessions = 0
        # Load every script the phases time, so that no measured call is a first NOSCRIPT.
        self.broker.queue_jobs([Job.new({"t": 0})])
        self.broker.queue_jobs([Job.new({"t": 0})], delay=FAR)
        self.flush()

    def add(self, metric: str, size: str, value: float | None, unit: str, note: str = "") -> None:
        self.rows.append(Row(metric, size, value, unit, note, self.phase))

    def flush(self) -> None:
        self.client.flushall()

    def fill(self, n: int, *, delay: float = 0.0) -> float:
        """Queue ``n`` no-op jobs for the shared queue (delayed by ``delay``); seconds taken,
        creating the jobs included."""
        started = time.perf_counter()
        for start in range(0, n, CHUNK):
            jobs = [Job.new({"t": 0}) for _ in range(min(CHUNK, n - start))]
            self.broker.queue_jobs(jobs, delay=delay)
        return time.perf_counter() - started

    def backlog(self, n: int) -> None:
        """Exactly ``n`` jobs queued and nothing else: kept from an earlier phase if so, else made."""
        idle = not self.broker.managers() and not self.broker.failed_count()
        if not (idle and self.broker.queued_count() == n and not self.client.zcard("qw:delayed")):
            self.flush()
            self.fill(n)
        self.client.delete(DONE)

    def memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def command(self, *args: str) -> tuple[CommandRun, CommandStats]:
        """Run ``qw ARGS --url URL``; what it cost, and Redis's work meanwhile. Fails if it fails."""
        window = RedisWindow(self.client)
        run = run_command(
            [self.qw, *args, "--url", self.url], env=self.env, cwd=HERE, timeout=COMMAND_TIMEOUT
        )
        stats = window.read()
        if run.exit_code != 0:
            raise RuntimeError(f"qw {' '.join(args)} exited {run.exit_code}: {run.stderr_tail[-200:]}")
        return run, stats

    def command_rows(self, label: str, size: str, run: CommandRun, stats: CommandStats) -> None:
        name, longest = stats.slowest()
        self.add(f"{label}: wall time", size, run.seconds, "s")
        self.add(f"{label}: peak RSS", size, run.rss_mb, "MB")
        self.add(
            f"{label}: longest Redis command", size, longest, "ms", f"{name}; {stats.total_calls:,} commands"
        )
        self.details[f"{label} ({size})"] = {"run": asdict(run), "redis": stats.as_dict()}

    @contextlib.contextmanager
    def workers(self, target: str, *options: str, count: int = WORKERS) -> Iterator[subprocess.Popen[bytes]]:
        """``qw run -w COUNT`` on ``backlog_targets:TARGET``, in a session of its own, stopped on exit."""
        self._sessions += 1
        argv = [self.qw, "run", "-w", str(count), "-n", MANAGER, "-l", "warning", "--url", self.url]
        argv += [*options, f"backlog_targets:{target}"]
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"qw-run-{self._sessions}-{target}.log").open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=HERE, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                yield process
            finally:
                stop_session(process)

    def wait_for_workers(self, process: subprocess.Popen[bytes], count: int = WORKERS) -> None:
        """Until ``count`` workers of :data:`MANAGER` are registered, then a moment for them to go idle."""
        deadline = time.monotonic() + 60
        while len(self.broker.workers(MANAGER)) < count:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qw run did not start {count} workers (see {self.logs})")
            time.sleep(0.05)
        time.sleep(0.5)

    def make_failed(self, n: int, limits: FailedLimits) -> CommandStats:
        """Add ``n`` jobs to the failed registry, bounded by ``limits``: queue them, take them
        (100 for each of many worker names, so that no take hands out a job twice), then fail
        each with ``fail_job``. Redis's statistics over the failing only: ``fail.lua``'s."""
        self.fill(n)
        taken: list[tuple[str, Job]] = []
        for batch in range(math.ceil(n / TAKE)):
            worker = f"{MANAGER}.{batch}"
            taken += [(worker, job) for job in self.broker.take(manager=MANAGER, worker=worker, limit=TAKE)]
        if len(taken) != n:
            raise RuntimeError(f"took {len(taken)} of the {n} jobs queued to fail")
        window = RedisWindow(self.client)
        for worker, job in taken:
            self.broker.fail_job(worker=worker, job=job, failure=FAILURE, limits=limits)
        return window.read()

    def close(self) -> None:
        self.broker.close()


def _failure() -> Failure:
    try:
        raise BenchFailure("this benchmark job always fails")
    except BenchFailure as exc:
        return Failure.from_exception(exc, worker=f"{MANAGER}.0")


FAILURE = _failure()


# -- the phases ----------------------------------------------------------------------------------


def enqueue(bench: Bench) -> None:
    for n in bench.sizes.enqueue:
        bench.flush()
        before = bench.memory()
        window = RedisWindow(bench.client)
        seconds = bench.fill(n)
        stats = window.read()
        size = f"{n:,} jobs"
        bench.add("enqueue: queue_jobs, 10,000 a call", size, n / seconds, "jobs/s")
        bench.add("enqueue: Redis memory per queued job", size, (bench.memory() - before) / n, "B")
        bench.add("queue.lua, 1,000 jobs a call: mean", size, stats.mean_ms("evalsha"), "ms")
        bench.add("queue.lua, 1,000 jobs a call: max", size, stats.max_ms("evalsha"), "ms")


def jobs(bench: Bench) -> None:
    n = bench.sizes.backlog
    bench.backlog(n)
    for label, extra, lines in (
        ("qw jobs", (), min(n, 100)),  # the first page
        ("qw jobs --all", ("--all",), n),
        ("qw jobs --all --json", ("--all", "--json"), n),
    ):
        run, stats = bench.command("jobs", *extra)
        if run.stdout_lines < lines:
            raise RuntimeError(f"{label} printed {run.stdout_lines:,} lines for {n:,} queued jobs")
        bench.command_rows(label, f"{n:,} queued", run, stats)


def drains(bench: Bench) -> None:
    sizes = bench.sizes
    bench.backlog(sizes.backlog)
    with bench.workers("succeed") as process:
        deep = drain(bench.client, process, sizes.drain, stall=STALL)
    size = f"{sizes.drain:,} of {sizes.backlog:,} queued"
    bench.add("drain: no-op jobs, 2 workers", size, deep["drain_per_s"], "jobs/s")
    bench.details["drain beside the backlog"] = deep

    bench.flush()
    bench.fill(sizes.drain)
    with bench.workers("succeed") as process:
        ok = drain(bench.client, process, sizes.drain, stall=STALL)
        idle = idle_cost(bench, seconds=3.0)
    bench.flush()
    bench.fill(sizes.drain)
    with bench.workers("fail", "--failed-max", str(10 * sizes.drain)) as process:
        bad = drain(bench.client, process, sizes.drain, stall=STALL)
    kept = bench.broker.failed_count()
    size = f"{sizes.drain:,} jobs"
    bench.add("drain: no-op jobs, 2 workers", size, ok["drain_per_s"], "jobs/s")
    bench.add(
        "drain: failing jobs, 2 workers", size, bad["drain_per_s"], "jobs/s", f"{kept:,} in the registry"
    )
    bench.add("drain: no-op / failing rate", size, ok["drain_per_s"] / bad["drain_per_s"], "x")
    bench.add("drain: Redis commands per no-op job", size, ok["commands_per_job"], "cmds")
    bench.add("drain: Redis commands per failing job", size, bad["commands_per_job"], "cmds")
    bench.add("idle: Redis commands per second", "a manager, 2 workers", idle["per_s"], "cmds/s")
    bench.add("idle: Redis round trips per second", "a manager, 2 workers", idle["round_trips_per_s"], "/s")
    bench.details.update({"drain no-op": ok, "drain failing": bad, "idle": idle})


def idle_cost(bench: Bench, seconds: float) -> dict[str, Any]:
    """Redis commands a second from the running (idle) workers and their manager."""
    time.sleep(1.0)  # the last jobs settled, the workers blocked
    first = snapshot(bench.client)
    time.sleep(seconds)
    last = snapshot(bench.client)
    took = last.at - first.at
    counted = per_job(first, last, 1, own_cmds=1, own_reads=1)  # the harness's GET and its read
    return {
        "per_s": counted["commands_per_job"] / took,
        "round_trips_per_s": counted["round_trips_per_job"] / took,
        "command_mix_per_s": {name: calls / took for name, calls in counted["command_mix"].items()},
    }


def status(bench: Bench) -> None:
    n, sizes = bench.sizes.delayed, bench.sizes
    bench.flush()
    window = RedisWindow(bench.client)
    seconds = bench.fill(n, delay=FAR)
    stats = window.read()
    size = f"{n:,} delayed"
    bench.add("enqueue delayed: queue_jobs(delay=), 10,000 a call", size, n / seconds, "jobs/s")
    bench.add("queue_delayed.lua, 1,000 jobs a call: mean", size, stats.mean_ms("evalsha"), "ms")
    bench.add("queue_delayed.lua, 1,000 jobs a call: max", size, stats.max_ms("evalsha"), "ms")

    names = [f"{MANAGER}-m{i}" for i in range(sizes.managers)]
    for count in (0, sizes.managers):
        for name in names[:count]:
            bench.broker.register_manager(name)
        run, stats = bench.command("status")
        label = "qw status"
        size = f"{n:,} delayed, {count} managers"
        bench.add(f"{label}: wall time", size, run.seconds, "s")
        slowest, longest = stats.slowest()
        note = f"{slowest}; {stats.total_calls:,} commands"
        bench.add(f"{label}: longest Redis command", size, longest, "ms", note)
        bench.details[f"{label} ({size})"] = {"run": asdict(run), "redis": stats.as_dict()}
    scrape(bench, f"{n:,} delayed")
    for name in names:
        bench.broker.deregister_manager(name)


def scrape(bench: Bench, size: str) -> None:
    """One Prometheus scrape of a running manager (``qw run --metrics-port``)."""
    label = "metrics scrape (qw run --metrics-port)"
    if importlib.util.find_spec("prometheus_client") is None:
        bench.add(f"{label}: wall time", size, None, "s", "skipped: prometheus_client is not installed")
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with bench.workers("succeed", "--metrics-port", str(port), count=1) as process:
        bench.wait_for_workers(process, count=1)
        deadline = time.monotonic() + 60
        while True:  # the first scrape, untimed: the server is up
            try:
                urllib.request.urlopen(url, timeout=60).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        window = RedisWindow(bench.client)
        started = time.perf_counter()
        body = urllib.request.urlopen(url, timeout=600).read().decode()
        seconds = time.perf_counter() - started
        stats = window.read()
    if 'state="delayed"' not in body:
        raise RuntimeError("the scrape has no qw_queue_jobs{state=delayed} gauge")
    name, longest = stats.slowest()
    bench.add(f"{label}: wall time", size, seconds, "s")
    bench.add(f"{label}: longest Redis command", size, longest, "ms", f"{name}; the manager's own included")


def failed(bench: Bench) -> None:
    n = bench.sizes.failed
    size = f"{n:,} failed"
    unbounded = FailedLimits(max_count=None, max_age=None)
    bench.flush()
    stats = bench.make_failed(n, unbounded)
    bench.add(f"fail.lua, registry growing to {n:,}: mean", size, stats.mean_ms("evalsha"), "ms")
    bench.add(f"fail.lua, registry growing to {n:,}: max", size, stats.max_ms("evalsha"), "ms")

    run, stats = bench.command("failed")
    bench.command_rows("qw failed (newest 20)", size, run, stats)
    run, stats = bench.command("failed", "requeue", "--all")
    left, queued = bench.broker.failed_count(), bench.broker.queued_count()
    if left or queued != n:
        raise RuntimeError(f"qw failed requeue --all left {left:,} failed and {queued:,} of {n:,} queued")
    bench.command_rows("qw failed requeue --all", size, run, stats)

    bench.flush()
    bench.make_failed(n, unbounded)
    run, stats = bench.command("failed", "purge", "--all")
    if bench.broker.failed_count():
        raise RuntimeError(f"qw failed purge --all left {bench.broker.failed_count():,} failed jobs")
    bench.command_rows("qw failed purge --all", size, run, stats)

    # At the default bound, each fail_job also deletes the oldest entry.
    bound = DEFAULT_FAILED_LIMITS.max_count or 10_000
    bench.flush()
    bench.make_failed(bound, DEFAULT_FAILED_LIMITS)
    stats = bench.make_failed(bound, DEFAULT_FAILED_LIMITS)
    kept = bench.broker.failed_count()
    size = f"{bound:,} kept, {bound:,} more failed"
    note = "" if kept == bound else f"**the registry holds {kept:,}**"
    bench.add("fail.lua at the default bound: mean", size, stats.mean_ms("evalsha"), "ms", note)
    bench.add("fail.lua at the default bound: max", size, stats.max_ms("evalsha"), "ms", note)


def lateness(bench: Bench) -> None:
    bench.flush()
    hz = bench.client.info("server")["hz"]
    rng = random.Random(22)
    one_by_one: list[float] = []
    with bench.workers("lateness") as process:
        bench.wait_for_workers(process)
        late_ms(bench, [0.05, 0.05])  # the first job of each worker, untimed
        for label, delay, count in bench.sizes.lateness:
            samples = [
                late_ms(bench, [rng.uniform(0.01, 1.0) if delay is None else delay])[0] for _ in range(count)
            ]
            one_by_one += samples
            lateness_rows(bench, f"due in {label}, one at a time, hz {hz}, {count} jobs", samples, top=False)
        lateness_rows(bench, f"all of the above, {len(one_by_one)} jobs", one_by_one)
        # Many waiting at once, as in production: one due sooner than those a worker waits for.
        count = bench.sizes.overlapping
        delays = [rng.uniform(0.01, 1.0) for _ in range(count)]
        gaps = [rng.expovariate(ARRIVALS) for _ in range(count)]
        samples = late_ms(bench, delays, gaps)
        size = f"due in 10 ms-1 s, {ARRIVALS:g} queued a second at random, hz {hz}, {count} jobs"
        lateness_rows(bench, size, samples)


def lateness_rows(bench: Bench, size: str, samples: list[float], *, top: bool = True) -> None:
    """p50 and p99 (and with ``top`` the largest) of ``samples``."""
    bench.add("delayed job lateness: p50", size, percentile(samples, 0.5), "ms")
    bench.add("delayed job lateness: p99", size, percentile(samples, 0.99), "ms")
    if top:
        bench.add("delayed job lateness: max", size, max(samples), "ms")
    bench.details[f"lateness {size}"] = samples


def late_ms(bench: Bench, delays: list[float], gaps: list[float] | None = None) -> list[float]:
    """Queue one job due ``delays[i]`` s ahead after each of ``gaps`` (default: :data:`GAP`,
    and each job waits for the one before it to start); how late each started, in ms."""
    late = []
    for i, delay in enumerate(delays):
        time.sleep(GAP if gaps is None else gaps[i])
        due = time.time() + delay
        bench.broker.queue_jobs([Job.new({"due": due})], at=due)
        if gaps is None:
            late.append(_late_ms(bench))
    return late if gaps is None else [_late_ms(bench) for _ in delays]


def _late_ms(bench: Bench) -> float:
    reply = bench.client.blpop([LATENCY], timeout=30)
    if reply is None:
        raise RuntimeError("a delayed job did not start within 30 s of being due")
    return 1000 * float(reply[1])


PHASES: dict[str, Callable[[Bench], None]] = {
    "enqueue": enqueue,
    "jobs": jobs,
    "drain": drains,
    "status": status,
    "failed": failed,
    "lateness": lateness,
}


# -- the table and main --------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 0.1 else 3
    return f"{value:,.{digits}f}"


def table(rows: list[Row]) -> str:
    lines = ["| metric | size | value | unit | note |", "|---|---|---:|---|---|"]
    lines += [f"| {r.metric} | {r.size} | {fmt(r.value)} | {r.unit} | {r.note} |" for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="sizes 10-100x smaller (a smoke run)")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated phases, from: {', '.join(PHASES)}")
    parser.add_argument("--json", nargs="?", const="", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--results", default=str(RESULTS), help="where logs and --json go (bench/results)")
    parser.add_argument("--redis-server", default="redis-server", help="the redis-server binary")
    return parser.parse_args(argv)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: the workers and redis-server are stopped on the way


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    names = args.only.split(",") if args.only else list(PHASES)
    unknown = [name for name in names if name not in PHASES]
    if unknown:
        print(f"backlog: unknown phase(s) {', '.join(unknown)}; known: {', '.join(PHASES)}", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = Path(args.results)
    failures = 0
    with private_redis(args.redis_server) as client:
        track_max_latency(client)
        server = client.info("server")
        machine = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "redis": server["redis_version"],
            "hz": server["hz"],
            "platform": platform.platform(),
        }
        bench = Bench(client, sizes, results / "logs" / f"backlog-{stamp}")
        print(f"backlog: Redis {machine['redis']} at {bench.url}; phases {', '.join(names)}", file=sys.stderr)
        try:
            for name in names:
                print(f"backlog: {name} ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                bench.phase = name
                try:
                    PHASES[name](bench)
                except Exception as exc:  # the other phases still run
                    failures += 1
                    bench.add(name, "", None, "", f"**failed: {type(exc).__name__}: {exc}**")
                print(f"backlog: {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        finally:
            bench.close()
    print(table(bench.rows))
    print(
        f"\nmachine: {machine['cpus']} CPUs, Python {machine['python']}, Redis {machine['redis']} "
        f"(hz {machine['hz']}), {machine['platform']}"
    )
    if args.json is not None:
        path = Path(args.json) if args.json else results / f"backlog-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "machine": machine,
            "sizes": asdict(sizes),
            "rows": [asdict(row) for row in bench.rows],
            "details": bench.details,
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results: {path}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
