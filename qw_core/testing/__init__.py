"""Testing with qw: an in-memory broker for your tests, and the contract suite for backends.

``from qw_core.testing import MemoryBroker`` gives a complete broker with no server to run,
as saq and dramatiq ship for their users, and :func:`run_jobs` runs what an application
queued through a real worker and says how each run ended. The helpers below
(:func:`make_jobs`, :func:`drain`, ...) work with it or any other broker. A backend's test subclasses
:class:`BrokerContract` and defines one ``broker`` fixture (see :mod:`.contract`).

The contract suite needs pytest, which qw-core does not depend on (``qw-core[testing]``
brings it); it is imported only when first asked for, so code that only wants the broker
and helpers works without pytest.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from qw_core.broker import Broker, BrokerFactory, Consumer, Membership, Reaped
from qw_core.memory import MemoryBroker
from qw_core.models import DEFAULT_QUEUE, Job
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.testing.running import TEST_MANAGER, Ran, TooManyRuns, run_jobs

if TYPE_CHECKING:
    from qw_core.testing.contract import BrokerContract

__all__ = [
    "MANAGER",
    "OTHER_MANAGER",
    "OTHER_WORKER",
    "TEST_MANAGER",
    "WOKEN_WITHIN",
    "WORKER",
    "WORKER_2",
    "BrokerContract",
    "MemoryBroker",
    "Ran",
    "TooManyRuns",
    "drain",
    "ids",
    "make_jobs",
    "opened",
    "poll_take",
    "run_jobs",
    "take_while_blocked",
    "wait_reaped",
]

#: Seconds within which a blocked take that something woke returns (the take itself waits
#: up to 30 s; the Redis tests block in 10 s slices, so a take that was not woken returns
#: much later). Generous, so that a busy machine does not fail it.
WOKEN_WITHIN = 5.0

#: Names the contract suite uses; they follow the ``<manager>.<pid>`` convention.
MANAGER = "m1"
OTHER_MANAGER = "m2"
WORKER = "m1.101"
WORKER_2 = "m1.102"
OTHER_WORKER = "m2.201"


def make_jobs(count: int, *, manager: str | None = None, worker: str | None = None) -> list[Job]:
    """``count`` fresh jobs with data ``{"n": 0}``, ``{"n": 1}``, ..."""
    return [Job.new({"n": n}, manager=manager, worker=worker) for n in range(count)]


def ids(jobs: Iterable[Job]) -> list[str]:
    """The ids of ``jobs``, in order."""
    return [job.id for job in jobs]


@contextlib.contextmanager
def opened(factory: BrokerFactory) -> Iterator[Broker]:
    """Open a broker with ``factory`` (for another thread or process) and close it after."""
    broker = factory()
    try:
        yield broker
    finally:
        broker.close()


def poll_take(
    broker: Consumer,
    *,
    manager: str = MANAGER,
    worker: str = WORKER,
    timeout: float,
    step: float,
    queues: Sequence[str] = (DEFAULT_QUEUE,),
) -> tuple[list[Job], float]:
    """Take with waits of up to ``step`` until a job comes or ``timeout`` runs out.

    Loops over early ``[]`` returns, as the contract asks callers to.

    :returns: the jobs taken (``[]`` on timeout) and the ``time.monotonic()`` it returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        wait = max(0.0, min(step, remaining))
        jobs = broker.take(manager=manager, worker=worker, timeout=wait, queues=queues)
        if jobs or remaining <= 0:
            return jobs, time.monotonic()


def take_while_blocked(
    broker: Consumer,
    act: Callable[[], object],
    *,
    blocked: Callable[[], bool],
    worker: str = WORKER,
    timeout: float = 30.0,
    queues: Sequence[str] = (DEFAULT_QUEUE,),
) -> tuple[list[Job], float]:
    """Block a take in another thread (on a broker from ``broker.factory()``), then ``act``.

    :param blocked: whether a take is blocked waiting for a job now (see
        :meth:`BrokerContract.blocked_takers`); polled until it says so, so ``act`` always
        happens while the take waits, never before it began to.
    :param timeout: the longest the take waits, in seconds.
    :returns: what the blocked take got, and how many seconds after ``act`` it returned.
    :raises TimeoutError: the take did not block within ``timeout``.
    """

    def taker(other: Consumer) -> tuple[list[Job], float]:
        return poll_take(other, worker=worker, timeout=timeout, step=timeout, queues=queues)

    with opened(broker.factory()) as other, ThreadPoolExecutor(1) as pool:
        future = pool.submit(taker, other)
        deadline = time.monotonic() + timeout
        while not blocked():
            if future.done() or time.monotonic() > deadline:
                raise TimeoutError("the take did not block waiting for a job")
            time.sleep(0.005)
        started = time.monotonic()
        act()
        taken, returned_at = future.result(timeout=2 * timeout)
    return taken, returned_at - started


def drain(broker: Broker, *, manager: str = MANAGER, worker: str = WORKER, limit: int = 1) -> list[Job]:
    """Take and finish batches of up to ``limit`` until ``manager``'s and the shared queue are empty.

    :returns: every job taken, in order.
    """
    taken: list[Job] = []
    finished: list[str] = []
    while True:
        batch = broker.take(manager=manager, worker=worker, finished=finished, limit=limit)
        taken += batch
        finished = ids(batch)
        if not batch and not broker.queued_job_ids(manager) and not broker.queued_job_ids():
            return taken


def wait_reaped(
    broker: Membership,
    worker: str,
    *,
    ttl: float,
    max_recoveries: int | None = 3,
    limits: FailedLimits = DEFAULT_FAILED_LIMITS,
) -> list[Reaped]:
    """Reap (without a lease) until ``worker`` is among the reaped; a few TTLs at most.

    :returns: what that reap recovered.
    :raises TimeoutError: ``worker`` was not reaped in time.
    """
    deadline = time.monotonic() + 10 * ttl + 2
    while time.monotonic() < deadline:
        found = broker.reap(owner="test", lease=0, ttl=ttl, max_recoveries=max_recoveries, limits=limits)
        reaped = found or []
        if any(r.worker == worker for r in reaped):
            return reaped
        time.sleep(ttl / 5)
    raise TimeoutError(f"{worker} was not reaped")


def __getattr__(name: str) -> Any:
    """Import :class:`BrokerContract` (and pytest) on first use (PEP 562)."""
    if name == "BrokerContract":
        try:
            import pytest  # noqa: PLC0415 - deferred: only the contract suite needs pytest
        except ImportError as exc:
            raise ImportError(
                "qw_core.testing.BrokerContract needs pytest: pip install 'qw-core[testing]'", name="pytest"
            ) from exc

        # Plain asserts in the suite then explain their failures, as in a test module.
        pytest.register_assert_rewrite("qw_core.testing.contract")
        from qw_core.testing import contract  # noqa: PLC0415 - deferred, as above

        return contract.BrokerContract
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
