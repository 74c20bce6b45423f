"""Enqueue-to-start latency only, two qw checkouts and the peers interleaved (an A/B).

    python bench/latency_ab.py --base /path/to/main --new . --peers huey,taskiq-list --rounds 5

A change of a few tens of microseconds in the latency disappears in the noise of a shared
machine between two runs of ``run.py`` a few minutes apart. This measures only the latency
(``run.py``'s step 5: one job at a time to 2 idle worker processes), each round one
measurement of each variant in turn on one private ``redis-server``, so that every round
compares variants measured within seconds of each other; the summary gives each variant's
p50 per round and the medians over the rounds. ``base`` and ``new`` are qw as it is in
those checkouts (each on ``PYTHONPATH`` ahead of the installed one, run by the interpreter
running this script); the peers run from their virtualenvs, as in ``run.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import run
import venvs
from peers import PEERS

#: Seconds the workers get to start and settle into their idle wait before the probe.
SETTLE = 2.0
#: Latency samples thrown away first in each measurement (connections, imports, caches).
WARM_UP = 30


def checkout_path(root: Path) -> str:
    """The ``PYTHONPATH`` that runs qw from checkout ``root``."""
    return ":".join(str(root / part) for part in ("", "qw_redis/src", "qw_postgres/src"))


def measure(variant: str, roots: dict[str, Path], url: str, samples: int, logs: Path) -> list[float]:
    """One latency measurement of ``variant`` (``base``, ``new`` or a peer): its samples, in s."""
    peer = PEERS["qw" if variant in roots else variant]
    runner = run.Runner(peer, venvs.ensure(peer), url, logs, {})
    if variant in roots:
        runner.env["PYTHONPATH"] = f"{run.HERE}:{checkout_path(roots[variant])}"
    with runner.workers():
        time.sleep(SETTLE)
        runner.call("latency", "--n", str(WARM_UP))
        result = runner.call("latency", "--n", str(samples))
    return sorted(result["samples"])


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--new", type=Path, required=True, help="the checkout with the change")
    parser.add_argument("--peers", default="huey", help="peers measured beside them (comma-separated)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=400, help="latency samples per measurement")
    parser.add_argument("--redis-server", default="redis-server")
    args = parser.parse_args()
    roots = {"base": args.base.resolve(), "new": args.new.resolve()}
    variants = ["base", "new", *filter(None, args.peers.split(","))]
    logs = run.RESULTS / "logs" / f"latency-ab-{time.strftime('%Y%m%d-%H%M%S')}"
    found: dict[str, list[tuple[float, float]]] = {variant: [] for variant in variants}
    with run.private_redis(args.redis_server) as client:
        for round_ in range(args.rounds):
            for variant in variants:
                run.reset(client)
                samples = measure(variant, roots, run.url_of(client), args.samples, logs)
                p50 = 1000 * statistics.median(samples)
                p99 = 1000 * samples[min(len(samples) - 1, int(len(samples) * 0.99))]
                found[variant].append((p50, p99))
                print(f"round {round_ + 1} {variant:12} p50 {p50:.3f} ms  p99 {p99:.3f} ms", flush=True)
    for variant, rows in found.items():
        p50s = " ".join(f"{p50:.3f}" for p50, _ in rows)
        p50 = statistics.median(p50 for p50, _ in rows)
        p99 = statistics.median(p99 for _, p99 in rows)
        print(f"{variant:12} p50 per round {p50s}; median p50 {p50:.3f} ms, p99 {p99:.3f} ms")


if __name__ == "__main__":
    main()
