"""The throughput chart: bars of jobs begun per minute, drawn as inline SVG on the server
(no chart library, no script). The template draws what :func:`bars` computes; every value
in it is a number or escaped text."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import attrs

from qw_core.models import JobsRun

#: The chart's size in SVG units (it scales to its box).
WIDTH, HEIGHT = 1000, 170
#: Room below the bars for the time labels, and above them for the peak's.
BOTTOM, TOP = 18, 14


@attrs.frozen(kw_only=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str  # the minute, HH:MM local time
    show_label: bool


@attrs.frozen(kw_only=True)
class Chart:
    bars: list[Bar]
    peak: int
    width: int = WIDTH
    height: int = HEIGHT
    baseline: float = HEIGHT - BOTTOM


def bars(runs: Sequence[JobsRun]) -> Chart:
    """The bars for ``runs`` (oldest first), scaled so the busiest minute fills the height."""
    peak = max((entry.total for entry in runs), default=0)
    room = HEIGHT - BOTTOM - TOP
    step = WIDTH / max(1, len(runs))
    found = []
    for n, entry in enumerate(runs):
        height = 0.0 if peak == 0 else room * entry.total / peak
        if entry.total and height < 1:
            height = 1.0  # a minute with any job shows
        at = datetime.datetime.fromtimestamp(entry.minute).strftime("%H:%M")
        found.append(
            Bar(
                x=round(n * step + step * 0.1, 1),
                y=round(HEIGHT - BOTTOM - height, 1),
                width=round(step * 0.8, 1),
                height=round(height, 1),
                value=entry.total,
                label=at,
                show_label=(len(runs) - 1 - n) % 5 == 0,
            )
        )
    return Chart(bars=found, peak=peak)
