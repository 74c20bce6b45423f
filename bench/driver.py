"""The harness's agent inside one peer's virtualenv (run as ``python driver.py``).

Actions (the last line on stdout is a JSON object the harness reads):

* ``info``: the peer's version(s), whether it has a bulk API, and its concurrency setting
  (jobs a worker process runs at once, and the setting that says so; in I/O mode,
  ``BENCH_IO_MS`` set, some peers use another);
* ``enqueue --n N [--bulk]``: queue N benchmark jobs (one call each, or the peer's bulk
  API), timed here, so interpreter and import time are left out;
* ``latency --n N [--queue shared|manager]``: N times: note the time, queue one latency job,
  wait for its task to report how late it started; idle gaps between jobs;
* ``worker --workers W``: become the peer's worker (W processes); never returns;
* ``setup``: create the peer's tables (a PostgreSQL peer, in ``BENCH_PG_URL``'s database).

The adapter module (``peers/<module>.py``) provides ``version()``, ``worker(workers)``,
``concurrency()`` (``common.concurrency(...)``) and a ``Producer`` class with
``send(t, queue)`` and optionally ``send_many(n)``; either may be ``async def``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import common

#: Pause between two latency jobs, so every job finds the workers idle (blocked).
IDLE_GAP = 0.005


def _run(loop: asyncio.AbstractEventLoop, value: Any) -> Any:
    return loop.run_until_complete(value) if inspect.isawaitable(value) else value


def enqueue(adapter: Any, n: int, *, bulk: bool) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    producer = adapter.Producer()
    _run(loop, getattr(producer, "open", lambda: None)())
    if bulk:
        if not hasattr(producer, "send_many"):
            return {"error": "no bulk API"}
        started = time.perf_counter()
        _run(loop, producer.send_many(n))
        seconds = time.perf_counter() - started
    elif inspect.iscoroutinefunction(producer.send):

        async def many() -> float:
            started = time.perf_counter()
            for _ in range(n):
                await producer.send(0)
            return time.perf_counter() - started

        seconds = loop.run_until_complete(many())
    else:
        send = producer.send
        started = time.perf_counter()
        for _ in range(n):
            send(0)
        seconds = time.perf_counter() - started
    _run(loop, getattr(producer, "close", lambda: None)())
    return {"seconds": seconds, "n": n}


def latency(adapter: Any, n: int, queue: str, timeout: float) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    producer = adapter.Producer()
    _run(loop, getattr(producer, "open", lambda: None)())
    waiter = common.client()
    waiter.delete(common.LATENCY)
    samples = []
    for _ in range(n):
        time.sleep(IDLE_GAP)
        _run(loop, producer.send(time.time(), queue))
        reply = waiter.blpop([common.LATENCY], timeout=timeout)
        if reply is None:
            return {"error": f"a latency job did not start within {timeout:g} s", "samples": samples}
        samples.append(float(reply[1]))
    _run(loop, getattr(producer, "close", lambda: None)())
    return {"samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("module")
    parser.add_argument("action", choices=["info", "enqueue", "latency", "worker", "setup"])
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--bulk", action="store_true")
    parser.add_argument("--queue", default="shared", choices=["shared", "manager"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    adapter = importlib.import_module(f"peers.{args.module}")
    if args.action == "worker":
        adapter.worker(args.workers)
        return
    if args.action == "info":
        bulk = hasattr(adapter.Producer, "send_many")
        result: dict[str, Any] = {"version": adapter.version(), "bulk": bulk}
        if hasattr(adapter, "concurrency"):
            result["concurrency"] = adapter.concurrency()
    elif args.action == "setup":
        _run(asyncio.new_event_loop(), adapter.setup())
        result = {"setup": True}
    elif args.action == "enqueue":
        result = enqueue(adapter, args.n, bulk=args.bulk)
    else:
        result = latency(adapter, args.n, args.queue, args.timeout)
    sys.stdout.flush()
    print("\n" + json.dumps(result))


if __name__ == "__main__":
    main()
