"""Capped, jittered back-off for calls that fail because the broker cannot be reached.

Used by the worker loop and by the manager's threads, so that a Redis restart or a
failover costs every process a few short, spread-out waits instead of a busy loop or a
crash. After AWS's "Exponential Backoff and Jitter": each wait is drawn from the upper
half of an exponentially growing, capped window ("equal jitter"), so waits never shrink
to nothing (no busy loop) while many processes reconnecting at once still spread out.
"""

from __future__ import annotations

import random

import attrs


@attrs.define
class Backoff:
    """The waits between attempts of one failing operation.

    :param first: the window of the first wait, in seconds (the wait is half to all of it).
    :param cap: the largest window, in seconds.
    """

    first: float = 0.1
    cap: float = 2.0
    failures: int = 0

    def next(self) -> float:
        """Count a failure; seconds to wait before the next attempt (each call widens the
        window, up to ``cap``)."""
        self.failures += 1
        return self.wait()

    def wait(self) -> float:
        """Seconds to wait after the failures counted so far: half to all of a window of
        ``first * 2 ** (failures - 1)``, capped at ``cap``."""
        window = min(self.cap, self.first * 2.0 ** min(max(self.failures - 1, 0), 32))
        return window / 2 + random.uniform(0, window / 2)  # jitter, not cryptography

    def reset(self) -> None:
        """The operation succeeded: start again from ``first``."""
        self.failures = 0
