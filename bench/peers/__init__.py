"""The peers the harness knows: what to install for each, and which adapter module runs it.

This module is imported by ``bench/run.py`` (in qw's environment) and must not import any
peer library. Each adapter module (``peers/<module>.py``) is only ever imported inside its
peer's own virtualenv, by ``bench/driver.py`` and by the worker processes it starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Peer:
    """One column of the comparison.

    :param name: what the table calls it (and ``--peers`` selects).
    :param module: the adapter module under ``bench/peers/``.
    :param venv: the virtualenv under ``bench/.venvs/`` it runs in (peers may share one);
        ``None``: qw itself, run with the interpreter running the harness.
    :param requirements: what ``pip install`` puts in that virtualenv.
    :param dists: distributions whose versions the table shows.
    :param delivery: what a worker crash does to a job it had taken.
    :param env: environment variables for its driver and workers (on top of the harness's).
    :param io_only: measured only in I/O mode (``run.py --io``).
    :param backend: the store its jobs live in: ``redis``, or ``postgres`` (``run.py
        --backend postgres``, the PostgreSQL comparison); ``any``: a reference row measured
        in both comparisons (its jobs in the harness's Redis).
    """

    name: str
    module: str
    venv: str | None
    requirements: tuple[str, ...] = ()
    dists: tuple[str, ...] = ()
    delivery: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    io_only: bool = False
    backend: str = "redis"


#: Every peer venv also gets redis-py (the task's INCR uses it) and hiredis (qw's benchmark
#: runs with qw-redis[hiredis]; the peers built on redis-py get the same parser).
COMMON = ("redis", "hiredis")
# uvloop: qw's harness environment has qw-core[uvloop], and taskiq gets taskiq[uv], its own
# extra for it: both then run their event loops on uvloop, as each does once it is installed.

PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer("qw", "qw_peer", None, dists=("qw-core", "redis", "hiredis", "uvloop"), delivery="at-least-once"),
        # I/O mode only: qw with a plain function target (time.sleep), beside the async one.
        Peer(
            "qw-sync",
            "qw_peer",
            None,
            dists=("qw-core", "redis", "hiredis"),
            delivery="at-least-once",
            env={"BENCH_QW_SYNC": "1"},
            io_only=True,
        ),
        # I/O mode only: no queue library, the ceiling the others are measured against.
        Peer(
            "bare",
            "bare_peer",
            None,
            dists=("redis", "hiredis", "uvloop"),
            delivery="none (popped, never acknowledged)",
            io_only=True,
            backend="any",
        ),
        Peer("rq", "rq_peer", "rq", ("rq",), ("rq",), "at-least-once"),
        Peer("dramatiq", "dramatiq_peer", "dramatiq", ("dramatiq[redis]",), ("dramatiq",), "at-least-once"),
        Peer("celery", "celery_peer", "celery", ("celery[redis]",), ("celery",), "at-most-once (default)"),
        Peer("arq", "arq_peer", "arq", ("arq",), ("arq",), "at-least-once"),
        Peer("huey", "huey_peer", "huey", ("huey",), ("huey",), "at-most-once"),
        Peer(
            "taskiq-list",
            "taskiq_list_peer",
            "taskiq",
            ("taskiq[uv]", "taskiq-redis"),
            ("taskiq", "taskiq-redis", "uvloop"),
            "at-most-once",
        ),
        Peer(
            "taskiq-stream",
            "taskiq_stream_peer",
            "taskiq",
            ("taskiq[uv]", "taskiq-redis"),
            ("taskiq", "taskiq-redis", "uvloop"),
            "at-least-once",
        ),
        # saq 0.26 imports typing_extensions without declaring it.
        Peer("saq", "saq_peer", "saq", ("saq", "typing_extensions"), ("saq",), "at-least-once"),
        # The PostgreSQL comparison (run.py --backend postgres): qw-postgres and the Python
        # job queues built on PostgreSQL, each on a database of its own in one private cluster.
        Peer(
            "qw-pg",
            "qw_pg_peer",
            None,
            dists=("qw-core", "qw-postgres", "psycopg"),
            delivery="at-least-once",
            backend="postgres",
        ),
        Peer(
            "qw-pg-sync",
            "qw_pg_peer",
            None,
            dists=("qw-core", "qw-postgres", "psycopg"),
            delivery="at-least-once",
            env={"BENCH_QW_SYNC": "1"},
            io_only=True,
            backend="postgres",
        ),
        Peer(
            "procrastinate",
            "procrastinate_peer",
            "procrastinate",
            ("procrastinate", "psycopg[binary]"),
            ("procrastinate", "psycopg"),
            # A job whose worker died stays "doing" until the application retries its
            # stalled jobs (a periodic task of its own, as procrastinate's docs show).
            "at-most-once (default)",
            backend="postgres",
        ),
        Peer(
            "pgqueuer",
            "pgqueuer_peer",
            "pgqueuer",
            ("pgqueuer", "asyncpg"),
            ("pgqueuer", "asyncpg"),
            "at-least-once",
            backend="postgres",
        ),
    )
}
