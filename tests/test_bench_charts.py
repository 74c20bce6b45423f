"""The benchmark charts in the documentation show the figures they were made from.

``docs/images/bench/*.svg`` are rendered by ``bench/charts.py`` from
``bench/figures/2026-12-03.json`` (the README's Performance tables). The charts keep
their text as text, so this checks, without matplotlib, that each chart names every
library of its run and shows each one's figure: a chart left behind when the figures
change fails here.
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = json.loads((ROOT / "bench" / "figures" / "2026-12-03.json").read_text(encoding="utf-8"))
CHARTS = ROOT / "docs" / "images" / "bench"


def texts(chart: str) -> list[str]:
    """The text elements of a chart."""
    svg = (CHARTS / chart).read_text(encoding="utf-8")
    return [unescape(text) for text in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


def test_the_no_op_drain_chart_shows_each_librarys_rate() -> None:
    shown = texts("noop-drain.svg")
    for name, row in FIGURES["noop"]["results"].items():
        assert name in shown, name
        assert f"{row['drain_per_s']:,.0f}" in shown, (name, row["drain_per_s"])


def test_the_latency_chart_shows_each_librarys_p50_and_p99() -> None:
    shown = texts("noop-latency.svg")
    for name, row in FIGURES["noop"]["results"].items():
        assert name in shown, name
        assert f"p50 {row['latency']['p50_ms']:.2f}" in shown, name
        assert f"p99 {row['latency']['p99_ms']:.2f}" in shown, name


def test_the_io_drain_chart_shows_each_librarys_rate_and_jobs_in_flight() -> None:
    shown = texts("io-drain.svg")
    for name, row in FIGURES["io"]["results"].items():
        assert f"{name.replace('`', '')} ({row['in_flight']:,} in flight)" in shown, name
        assert f"{row['drain_per_s']:,.0f}" in shown, (name, row["drain_per_s"])
