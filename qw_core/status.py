"""What a worker process is running, in memory it shares with its manager.

The manager enforces job time limits (``--job-timeout``, ``meta["timeout"]``) from outside
the worker, since a target that hangs or holds the GIL cannot be stopped from inside. For
that it must know, for each worker, which job runs and until when it may run, without a
Redis round trip per job on the hot path: the worker writes the job id and its deadline
into a small shared-memory record before calling the target and clears the deadline
after (two memory writes), and the manager reads the records a few times a second.

The record also says whether the worker got through its start-up (``ready``) or gave up
on it (``cannot start``: a bad target or plugin), so the manager tells "stop, this will
never work" from "a worker died" by what the worker wrote, never by its exit code: a
target may exit with any code, qw's own included.

The same record says which job a worker has in hand (from its ``qw_job_started`` hook to
its ``qw_job_finished`` one), so that when a worker dies its manager blames that job
alone for the crash, not the jobs it held beside it (:meth:`Broker.recover_worker`);
and which jobs succeeded but are not finished in the broker yet (a worker finishes them
with its next take, see ``Worker.finish_delay``), so that its manager finishes those
instead of putting them back to run again.

The record is written by one process and read by another without a lock: the writer
bumps ``seq`` when a job starts, and clears ``deadline`` when it ends before writing the
next job's id, so an overdue deadline always belongs to the id beside it. The manager
kills an overrunning worker before it reads the id, and compares ``seq`` with what it saw
before the kill, so a job that ended just in time is never failed as timed out.

Deadlines are on :func:`time.monotonic`, a system-wide clock on the platforms qw runs on,
so both processes read the same clock.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

import attrs

#: Longest job id (in UTF-8 bytes) a worker can report; a longer one is reported as
#: unknown, and a timed-out job with such an id is recovered as after a crash instead.
MAX_ID_BYTES = 1024
#: Room for the ids of jobs that succeeded and are not finished yet (2 bytes of length
#: each, then the id): a full batch of uuids many times over. Ids past it are not
#: recorded, and such a job runs again if its worker dies before finishing it.
DONE_BYTES = 16384


#: What a worker reported about its start-up (the record's ``phase``).
STARTING, READY, CANNOT_START = 0, 1, 2


class _Record(ctypes.Structure):
    _fields_ = [
        ("phase", ctypes.c_uint8),
        ("seq", ctypes.c_uint64),
        ("deadline", ctypes.c_double),
        ("limit", ctypes.c_double),
        ("size", ctypes.c_uint32),
        ("busy", ctypes.c_uint8),
        ("done_size", ctypes.c_uint32),
        ("done_ids", ctypes.c_char * DONE_BYTES),
        ("job_id", ctypes.c_char * MAX_ID_BYTES),
    ]


@attrs.frozen
class Running:
    """A job a worker reported as running.

    :param seq: how many jobs the worker had started, this one included.
    :param job_id: the job's id, or ``None`` if it was too long to report.
    :param deadline: when it must end, on :func:`time.monotonic`.
    :param limit: its time limit in seconds.
    """

    seq: int
    job_id: str | None
    deadline: float
    limit: float


@attrs.frozen
class Busy:
    """The job a worker had in hand.

    :param job_id: its id, or ``None`` if it was too long to report.
    """

    job_id: str | None


class JobStatus:
    """The shared record of one worker slot; created by the manager, written by its worker.

    :param context: the multiprocessing context the worker is started with (the record
        is passed to the worker process as an argument, so it survives ``spawn``).
    """

    def __init__(self, context: Any) -> None:
        self._record = context.RawValue(_Record)

    def ready(self) -> None:
        """The worker started: its target and plugins loaded, its broker open."""
        self._record.phase = READY

    def cannot_start(self) -> None:
        """The worker gave up starting (a bad target or plugin); it exits next."""
        self._record.phase = CANNOT_START

    @property
    def could_not_start(self) -> bool:
        """Whether the worker reported that it cannot start (the manager then stops)."""
        return bool(self._record.phase == CANNOT_START)

    def began(self, job_id: str) -> None:
        """The worker has ``job_id`` in hand: its hooks and target are about to run."""
        record = self._record
        data = job_id.encode("utf-8", "surrogatepass")
        size = len(data) if len(data) <= MAX_ID_BYTES else 0
        ctypes.memmove(ctypes.addressof(record) + _Record.job_id.offset, data, size)
        record.size = size
        record.busy = 1

    def started(self, limit: float | None) -> None:
        """The worker is about to call the target for the job it began, allowed ``limit`` seconds."""
        record = self._record
        record.limit = 0.0 if limit is None else limit
        record.deadline = 0.0 if limit is None else time.monotonic() + limit
        record.seq += 1

    def ended(self) -> None:
        """The target returned or raised."""
        self._record.deadline = 0.0

    def done(self) -> None:
        """The job is settled and its last hook has run: the worker holds nothing in hand."""
        self._record.busy = 0

    def succeeded(self, job_id: str) -> None:
        """``job_id`` succeeded; the worker will finish it in the broker later."""
        record = self._record
        data = job_id.encode("utf-8", "surrogatepass")
        end = record.done_size
        entry = len(data).to_bytes(2, "little") + data
        if len(data) > MAX_ID_BYTES or end + len(entry) > DONE_BYTES:
            return
        ctypes.memmove(ctypes.addressof(record) + _Record.done_ids.offset + end, entry, len(entry))
        record.done_size = end + len(entry)  # last: a reader sees whole entries only

    def settled(self) -> None:
        """Every job reported by :meth:`succeeded` is finished in the broker."""
        self._record.done_size = 0

    def successes(self) -> list[str]:
        """The jobs that succeeded and were not finished in the broker when last reported."""
        record = self._record
        raw = ctypes.string_at(ctypes.addressof(record) + _Record.done_ids.offset, record.done_size)
        ids, at = [], 0
        while at + 2 <= len(raw):
            size = int.from_bytes(raw[at : at + 2], "little")
            ids.append(raw[at + 2 : at + 2 + size].decode("utf-8", "surrogatepass"))
            at += 2 + size
        return ids

    def reset(self) -> None:
        """Forget everything (the manager, before starting a new worker in the slot)."""
        self._record.phase = STARTING
        self._record.deadline = 0.0
        self._record.size = 0
        self._record.busy = 0
        self._record.done_size = 0

    def busy(self) -> Busy | None:
        """The job the worker has in hand, or ``None`` between jobs.

        Read after the worker died, this is the job it died running (or in its hooks).
        """
        record = self._record
        if not record.busy:
            return None
        size = record.size
        raw = ctypes.string_at(ctypes.addressof(record) + _Record.job_id.offset, size)
        return Busy(raw.decode("utf-8", "surrogatepass") if size else None)

    def running(self) -> Running | None:
        """The job running under a time limit now, or ``None`` (idle, or running without one)."""
        record = self._record
        seq, deadline, limit, size = record.seq, record.deadline, record.limit, record.size
        if deadline <= 0:
            return None
        raw = ctypes.string_at(ctypes.addressof(record) + _Record.job_id.offset, size)
        job_id = raw.decode("utf-8", "surrogatepass") if size else None
        return Running(seq=seq, job_id=job_id, deadline=deadline, limit=limit)

    @property
    def seq(self) -> int:
        """How many jobs the worker has started."""
        return int(self._record.seq)
