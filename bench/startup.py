"""How long a ``qw`` command takes to start, and the peers' command-line tools beside it.

A user types ``qw status`` or ``qw enqueue`` many times a day, and scripts call them in
loops: every verb imports only what it needs (``qw_cli.main.COMMANDS``), and this measures
the whole process, from exec to exit, against a private ``redis-server``:

    python bench/startup.py                     # qw's verbs, and the peers already installed
    python bench/startup.py --peers rq,celery   # installs those peers first (bench/venvs.py)

Each command runs ``--repeat`` times (default 10); the table shows the median and the
fastest run, and each peer's ``--help`` beside ``qw --help`` as a ratio (how long the
tool takes to say anything at all). Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers import PEERS  # noqa: E402
from run import private_redis, url_of  # noqa: E402
from venvs import VENVS, InstallFailed, ensure  # noqa: E402

#: Each peer's command-line tool (in its virtualenv's bin/).
PEER_TOOLS = {
    "rq": "rq",
    "dramatiq": "dramatiq",
    "celery": "celery",
    "arq": "arq",
    "huey": "huey_consumer",
    "taskiq-list": "taskiq",
    "saq": "saq",
}


def qw_commands(url: str) -> dict[str, list[str]]:
    qw = [str(Path(sys.executable).with_name("qw"))]
    return {
        "qw --version": [*qw, "--version"],
        "qw --help": [*qw, "--help"],
        "qw enqueue (one job)": [*qw, "enqueue", "--url", url, '{"n": 1}'],
        "qw status": [*qw, "status", "--url", url],
        "qw failed": [*qw, "failed", "--url", url],
        "qw run --help": [*qw, "run", "--help"],
    }


def timed(argv: list[str], repeat: int) -> list[float]:
    """Wall-clock seconds of each of ``repeat`` runs of ``argv`` (which must exit 0)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=False, env={**os.environ, "QW_URL": ""})
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(
                f"bench: {' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-300:]}"
            )
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=10, help="runs per command (default 10)")
    parser.add_argument("--peers", help=f"install and measure these: {', '.join(PEER_TOOLS)}")
    parser.add_argument("--redis-server", default="redis-server", help="the redis-server binary")
    args = parser.parse_args(argv)

    peers = args.peers.split(",") if args.peers else []
    unknown = [name for name in peers if name not in PEER_TOOLS]
    if unknown:
        print(f"bench: unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEER_TOOLS)}", file=sys.stderr)
        return 2
    tools: dict[str, list[str]] = {}
    for name, tool in PEER_TOOLS.items():
        peer = PEERS[name]
        if name in peers:
            try:
                ensure(peer)
            except InstallFailed as exc:
                print(f"bench: {name}: {exc}", file=sys.stderr)
                continue
        binary = VENVS / str(peer.venv) / "bin" / tool
        if binary.exists():
            tools[f"{tool} --help ({name})"] = [str(binary), "--help"]

    rows: list[tuple[str, float, float]] = []
    with private_redis(args.redis_server) as client:
        for label, command in {**qw_commands(url_of(client)), **tools}.items():
            times = timed(command, args.repeat)
            rows.append((label, statistics.median(times), min(times)))

    ours = next(median for label, median, _ in rows if label == "qw --help")
    width = max(len(label) for label, _, _ in rows)
    print(f"{'command':<{width}}  median ms  fastest ms  qw --help is")
    for label, median, fastest in rows:
        versus = f"{median / ours:.1f}x faster" if label in tools else ""
        print(f"{label:<{width}}  {median * 1000:9.0f}  {fastest * 1000:10.0f}  {versus}")
    print(f"\n{args.repeat} runs each; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
