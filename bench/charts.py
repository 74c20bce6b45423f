"""Charts of a benchmark run, as SVG: the drain rate and the latency of each library.

``run.py`` calls :func:`write_charts` after each run (into ``bench/results/``, beside the
JSON); this script renders the charts of a results file written before::

    python bench/charts.py bench/figures/2026-12-03.json --out docs/images/bench

A results file is what ``run.py --json`` writes (``{"results": {peer: row}}``, and
``io_ms`` for an I/O-bound run), or a figures file holding a ``noop`` and an ``io`` run
(``bench/figures/``: the figures the README's tables show, which the documentation's
charts are made from).

Charts (each written only when the run measured it):

- ``noop-drain.svg``: jobs a second drained from a queue of no-op jobs, per library;
- ``noop-latency.svg``: milliseconds from enqueue to start, p50 and p99, per library;
- ``io-drain.svg``: jobs a second drained when every job waits (I/O-bound), per library.

Text stays text in the SVG (searchable, and checked by ``tests/test_bench_charts.py``),
and the files are deterministic (no date, fixed ids), so a chart changes in git only
when its figures do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: qw's colour, and the others'.
QW_COLOUR = "#1f77b4"
PEER_COLOUR = "#9e9e9e"


def _pyplot() -> Any:
    import matplotlib  # noqa: PLC0415 - only to draw: run.py imports this module, with or without it

    matplotlib.use("svg")
    matplotlib.rcParams.update(
        {"svg.fonttype": "none", "svg.hashsalt": "qw-bench", "font.size": 10, "axes.spines.top": False}
    )
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after the backend is chosen

    return plt


def label(name: str) -> str:
    """A peer's name as a chart shows it (the README's table may mark code with backticks)."""
    return name.replace("`", "")


def _io_label(name: str, row: dict[str, Any]) -> str:
    """A peer's name, with how many jobs it had in flight when that is known (I/O runs)."""
    return f"{name} ({row['in_flight']:,} in flight)" if row.get("in_flight") else name


def _measured(results: dict[str, dict[str, Any]], key: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, row) for name, row in results.items() if row.get(key) is not None]


def _bar_chart(plt: Any, rows: list[tuple[str, float]], *, title: str, xlabel: str, path: Path) -> Path:
    rows = sorted(rows, key=lambda item: item[1])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    names = [label(name) for name, _ in rows]
    values = [value for _, value in rows]
    colours = [QW_COLOUR if name.startswith("qw") else PEER_COLOUR for name, _ in rows]
    bars = ax.barh(names, values, color=colours)
    ax.bar_label(bars, labels=[f"{value:,.0f}" for value in values], padding=3)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(values) * 1.15)
    ax.spines["right"].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def _latency_chart(plt: Any, results: dict[str, dict[str, Any]], *, path: Path) -> Path:
    rows = [(name, row["latency"]) for name, row in _measured(results, "latency")]
    rows.sort(key=lambda item: -item[1]["p50_ms"])
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(rows) + 1.2))
    positions = range(len(rows))
    height = 0.4
    p50 = [lat["p50_ms"] for _, lat in rows]
    p99 = [lat["p99_ms"] for _, lat in rows]
    colours = [QW_COLOUR if name.startswith("qw") else PEER_COLOUR for name, _ in rows]
    first = ax.barh([p + height / 2 for p in positions], p50, height, color=colours, label="p50")
    second = ax.barh([p - height / 2 for p in positions], p99, height, color=colours, alpha=0.45, label="p99")
    ax.bar_label(first, labels=[f"p50 {value:.2f}" for value in p50], padding=3, fontsize=8)
    ax.bar_label(second, labels=[f"p99 {value:.2f}" for value in p99], padding=3, fontsize=8)
    ax.set_yticks(list(positions), [label(name) for name, _ in rows])
    ax.set_title("Latency from enqueue to start, idle workers (lower is better)")
    ax.set_xlabel("milliseconds")
    ax.set_xlim(0, max(p99) * 1.3)
    ax.spines["right"].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def write_charts(document: dict[str, Any], folder: Path) -> list[Path]:
    """Write the charts of one results document into ``folder``; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = (
        [(kind, document[kind]) for kind in ("noop", "io") if kind in document]
        if "results" not in document
        else [("io" if document.get("io_ms") else "noop", document)]
    )
    plt = _pyplot()
    written = []
    for kind, run in runs:
        results = {name: row for name, row in run["results"].items() if "error" not in row}
        drains = [
            (_io_label(name, row), row["drain_per_s"]) for name, row in _measured(results, "drain_per_s")
        ]
        if kind == "io":
            title = f"Jobs that each wait {run['io_ms']:g} ms: drained per second (higher is better)"
        else:
            title = "No-op jobs drained per second, 2 worker processes (higher is better)"
        if drains:
            written.append(
                _bar_chart(plt, drains, title=title, xlabel="jobs/s", path=folder / f"{kind}-drain.svg")
            )
        if kind == "noop" and _measured(results, "latency"):
            written.append(_latency_chart(plt, results, path=folder / "noop-latency.svg"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results", nargs="+", type=Path, help="results files (run.py --json, or bench/figures/)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/charts"), help="where the SVGs go")
    args = parser.parse_args(argv)
    for path in args.results:
        for written in write_charts(json.loads(path.read_text(encoding="utf-8")), args.out):
            print(written, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
