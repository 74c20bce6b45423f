"""Drain throughput of qw on a Redis Cluster of 1, 2 and 3 primaries, and on one Redis.

``python bench/cluster_drain.py [--jobs N] [--workers W] [--repeat R]``: for each layout,
start private ``redis-server`` processes (cluster nodes without replicas, their slots
split evenly by ``CLUSTER ADDSLOTSRANGE`` and joined by ``CLUSTER MEET``: ``redis-cli
--cluster create`` wants three primaries at least), queue N no-op jobs (batches of 1,000),
run ``qw run -w W cluster_drain:noop`` and time the drain from the first job taken to
the last finished (``shards`` = the number of primaries). Prints a table and the ratios
to one Redis; ``--json PATH`` writes the figures.

Every process (the servers, the manager and its workers, this script) shares this
machine's cores: on two cores the servers and the workers compete for the same CPU, so
the ratios say what sharding costs or saves per job here, not how a cluster whose
primaries have machines of their own scales.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
SLOTS = 16384


def noop(job_id: str, job_data: Any) -> None:
    """The jobs' target: nothing (the drain measures qw and Redis alone)."""


def _free_port() -> int:
    while True:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port + 10000 > 65535:
                continue
            try:
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


@contextlib.contextmanager
def servers(count: int, *, cluster: bool) -> Iterator[list[int]]:
    """``count`` redis-servers (cluster nodes if ``cluster``) on free ports."""
    binary = shutil.which("redis-server") or sys.exit("redis-server is not on the PATH")
    folder = Path(tempfile.mkdtemp(prefix="qw-bench-cluster-"))
    processes, ports = [], []
    try:
        for n in range(count):
            port = _free_port()
            extra = (
                ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{n}.conf"] if cluster else []
            )
            argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            argv += ["--dir", str(folder), *extra]
            processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
            ports.append(port)
        for port in ports:
            _wait(lambda port=port: redis.Redis(port=port).ping())
        if cluster:
            _join(ports)
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _wait(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError):
            if check():
                return
        if time.monotonic() > deadline:
            sys.exit("a server did not come up")
        time.sleep(0.05)


def _join(ports: list[int]) -> None:
    clients = [redis.Redis(port=port, decode_responses=True) for port in ports]
    for n, client in enumerate(clients):
        first, last = n * SLOTS // len(ports), (n + 1) * SLOTS // len(ports) - 1
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
    for client in clients[1:]:
        client.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0])
    _wait(lambda: all(c.cluster("info")["cluster_state"] == "ok" for c in clients), timeout=60)
    _wait(
        lambda: all(int(c.cluster("info")["cluster_known_nodes"]) == len(ports) for c in clients), timeout=60
    )


def drain(url: str, jobs: int, workers: int) -> float:
    """Queue ``jobs`` no-op jobs at ``url``, drain them with ``qw run -w workers``; jobs/s."""
    from qw_core.models import Job  # noqa: PLC0415 - imported where PYTHONPATH is set
    from qw_redis import RedisBroker  # noqa: PLC0415

    broker = RedisBroker.from_url(url)
    try:
        for start in range(0, jobs, 1000):
            broker.queue_jobs([Job.new({"n": n}) for n in range(start, min(jobs, start + 1000))])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        }
        command = [
            sys.executable,
            "-m",
            "qw_cli",
            "run",
            "--url",
            url,
            "-w",
            str(workers),
            "cluster_drain:noop",
        ]
        manager = subprocess.Popen(
            command, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            while broker.queued_count() == jobs:
                time.sleep(0.001)
            started = time.perf_counter()
            deadline = time.monotonic() + 600
            while broker.queued_count() > 0 or any(
                broker.held_count(w) for m in broker.managers() for w in broker.workers(m)
            ):
                if time.monotonic() > deadline or manager.poll() is not None:
                    sys.exit(f"the drain at {url} did not finish")
                time.sleep(0.01)
            return jobs / (time.perf_counter() - started)
        finally:
            manager.terminate()
            manager.wait(timeout=60)
    finally:
        broker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    layouts = [("one Redis", 1, False), ("cluster, 1 primary", 1, True)]
    layouts += [("cluster, 2 primaries", 2, True), ("cluster, 3 primaries", 3, True)]
    results: dict[str, list[float]] = {name: [] for name, _, _ in layouts}
    for _ in range(args.repeat):
        for name, count, cluster in layouts:
            with servers(count, cluster=cluster) as ports:
                if cluster:
                    url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports) + f"/?shards={count}"
                else:
                    url = f"redis://127.0.0.1:{ports[0]}/0"
                rate = drain(url, args.jobs, args.workers)
                results[name].append(rate)
                print(f"{name}: {rate:,.0f} jobs/s", file=sys.stderr)
    # Each round runs every layout, one after the other: the ratio to one Redis is taken
    # within each round (the machine's load drifts between rounds), then the median.
    print(
        f"\n{args.jobs:,} no-op jobs, {args.workers} workers, {os.cpu_count()} CPUs, {args.repeat} round(s)\n"
    )
    print("| layout | drain jobs/s (median, min-max) | x one Redis (median of rounds, min-max) |")
    print("|---|---:|---:|")
    for name, rates in results.items():
        ratios = [rate / base for rate, base in zip(rates, results["one Redis"], strict=True)]
        print(
            f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) "
            f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"jobs": args.jobs, "workers": args.workers, "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
