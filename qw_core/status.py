"""What a worker process is running, in memory it shares with its manager.

The manager enforces job time limits (``--job-timeout``, ``meta["timeout"]``) from outside
the worker, since a target that hangs or holds the GIL cannot be stopped from inside. For
that it must know, for each worker, which jobs run and until when they may run, without a
Redis round trip per job on the hot path: the worker writes a job's id and its deadline
into a small shared-memory record before calling the target and clears the deadline
after (two memory writes), and the manager reads the records a few times a second.

A worker runs up to ``concurrency`` jobs at once, so the record has one *slot* per job
that can be in flight; each slot is written by whichever thread or task runs its job.
A worker that enforces a job's limit itself (threads, asyncio: it settles the job as
timed out at its deadline) gives the manager a later moment to kill it (``kill_at``),
the last resort for a thread or event loop that does not come back; once it has settled
such a job it marks the slot *abandoned*, so that the manager kills it without settling
the job again.

The record also says whether the worker got through its start-up (``ready``) or gave up
on it (``cannot start``: a bad target or plugin), so the manager tells "stop, this will
never work" from "a worker died" by what the worker wrote, never by its exit code: a
target may exit with any code, qw's own included.

Each slot says which job a worker has in hand (from its ``qw_job_started`` hook to its
``qw_job_finished`` one), so that when a worker dies its manager blames that job alone
for the crash, not the jobs it held beside it (:meth:`Broker.recover_worker`), or, when
several were in hand, treats them all as suspects to run alone; and the record says
which jobs succeeded but are not finished in the broker yet (a worker finishes them with
its next take, see ``Worker.finish_delay``), so that its manager finishes those instead of
putting them back to run again.

The record is written by one process and read by another without a lock: the writer
bumps a slot's ``seq`` when a job starts, and clears ``deadline`` when it ends before
writing the next job's id, so an overdue deadline always belongs to the id beside it.
The manager kills an overrunning worker before it reads the id, and compares ``seq`` with
what it saw before the kill, so a job that ended just in time is never failed as timed
out.

Deadlines are on :func:`time.monotonic`, a system-wide clock on the platforms qw runs on,
so both processes read the same clock.
"""

from __future__ import annotations

import ctypes
import hashlib
import time
from typing import Any

import attrs

#: Longest job id (in UTF-8 bytes) a worker reports whole; a longer one is reported by a
#: digest (:func:`id_digest`), which its manager matches against the worker's held jobs.
MAX_ID_BYTES = 1024
#: Bytes of the digest that stands for an id too long to report.
DIGEST_BYTES = 16
#: Room for the ids of jobs that succeeded and are not finished yet (2 bytes of length
#: each, then the id): a full batch of uuids many times over. Ids past it are not
#: recorded, and such a job runs again if its worker dies before finishing it.
DONE_BYTES = 16384
#: Room, likewise, for the ids of jobs that failed and whose failure is not written yet. A
#: worker that finds no room writes the failure at once instead.
FAILING_BYTES = 16384


#: What a worker reported about its start-up (the record's ``phase``).
STARTING, READY, CANNOT_START, RECYCLED = 0, 1, 2, 3


class _Header(ctypes.Structure):
    _fields_ = [
        ("phase", ctypes.c_uint8),
        ("done_size", ctypes.c_uint32),
        ("done_ids", ctypes.c_char * DONE_BYTES),
        ("failing_size", ctypes.c_uint32),
        ("failing_ids", ctypes.c_char * FAILING_BYTES),
    ]


class _SlotRecord(ctypes.Structure):
    _fields_ = [
        ("seq", ctypes.c_uint64),
        ("deadline", ctypes.c_double),
        ("kill_at", ctypes.c_double),
        ("limit", ctypes.c_double),
        ("began_at", ctypes.c_double),
        ("size", ctypes.c_uint32),
        ("busy", ctypes.c_uint8),
        ("abandoned", ctypes.c_uint8),
        ("digest", ctypes.c_char * DIGEST_BYTES),
        ("job_id", ctypes.c_char * MAX_ID_BYTES),
    ]


def id_digest(job_id: str) -> bytes:
    """The digest that stands for ``job_id`` when it is too long to report."""
    return hashlib.blake2b(job_id.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


@attrs.frozen
class Running:
    """A job a worker reported as running under a time limit.

    :param slot: the slot it runs in.
    :param seq: how many jobs had started in that slot, this one included.
    :param job_id: the job's id, or ``None`` if it was too long to report.
    :param digest: for an id too long to report, its :func:`id_digest`.
    :param deadline: when it must end, on :func:`time.monotonic`.
    :param kill_at: when its manager kills the worker if it is still running (the
        deadline itself, unless the worker times the job out by itself).
    :param limit: its time limit in seconds.
    :param abandoned: the worker settled it as timed out already; only its thread (or
        event loop) has not come back.
    """

    slot: int
    seq: int
    job_id: str | None
    digest: bytes | None
    deadline: float
    kill_at: float
    limit: float
    abandoned: bool = False


@attrs.frozen
class Busy:
    """A job a worker had in hand.

    :param job_id: its id, or ``None`` if it was too long to report.
    :param digest: for an id too long to report, its :func:`id_digest`.
    :param began_at: when it began (:func:`time.time`); ``0`` if not known.
    """

    job_id: str | None
    digest: bytes | None = None
    began_at: float = attrs.field(default=0.0, eq=False)


class JobStatus:
    """The shared record of one worker slot of a manager; created by the manager, written
    by its worker.

    :param context: the multiprocessing context the worker is started with (the record
        is passed to the worker process as an argument, so it survives ``spawn``).
    :param slots: how many jobs the worker may have in flight at once.
    """

    def __init__(self, context: Any, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"a status record needs at least one slot, not {slots}")
        self._header = context.RawValue(_Header)
        self._slots = context.RawArray(_SlotRecord, slots)

    @property
    def slots(self) -> int:
        return len(self._slots)

    def ready(self) -> None:
        """The worker started: its target and plugins loaded, its broker open."""
        self._header.phase = READY

    def cannot_start(self) -> None:
        """The worker gave up starting (a bad target or plugin); it exits next."""
        self._header.phase = CANNOT_START

    @property
    def could_not_start(self) -> bool:
        """Whether the worker reported that it cannot start (the manager then stops)."""
        return bool(self._header.phase == CANNOT_START)

    def recycled(self) -> None:
        """The worker reached a recycling bound (:mod:`qw_core.recycling`) and stopped
        warmly, holding nothing; it exits next, to be replaced at once."""
        self._header.phase = RECYCLED

    @property
    def was_recycled(self) -> bool:
        """Whether the worker reported that it stopped to be replaced."""
        return bool(self._header.phase == RECYCLED)

    # -- one slot: written by the thread or task running its job -------------------------

    def began(self, job_id: str, slot: int = 0) -> None:
        """``slot`` has ``job_id`` in hand: its hooks and target are about to run."""
        record = self._slots[slot]
        data = job_id.encode("utf-8", "surrogatepass")
        size = len(data) if len(data) <= MAX_ID_BYTES else 0
        if not size:
            digest = id_digest(job_id)
            ctypes.memmove(ctypes.addressof(record) + _SlotRecord.digest.offset, digest, DIGEST_BYTES)
        ctypes.memmove(ctypes.addressof(record) + _SlotRecord.job_id.offset, data, size)
        record.size = size
        record.began_at = time.time()
        record.abandoned = 0
        record.busy = 1

    def started(self, limit: float | None, slot: int = 0, *, kill_after: float = 0.0) -> None:
        """``slot`` is about to call the target of the job it began, allowed ``limit``
        seconds; its manager kills the worker ``kill_after`` seconds past the deadline
        (``0``: at the deadline: the worker does not time the job out by itself)."""
        record = self._slots[slot]
        record.limit = 0.0 if limit is None else limit
        deadline = 0.0 if limit is None else time.monotonic() + limit
        record.kill_at = 0.0 if limit is None else deadline + kill_after
        record.deadline = deadline
        record.seq += 1

    def ended(self, slot: int = 0) -> None:
        """The target in ``slot`` returned or raised."""
        self._slots[slot].deadline = 0.0

    def abandoned(self, slot: int = 0) -> None:
        """The worker settled ``slot``'s job as timed out, though its target is still running
        (a thread cannot be stopped): the manager must not settle it again."""
        record = self._slots[slot]
        record.abandoned = 1
        record.busy = 0

    def done(self, slot: int = 0) -> None:
        """``slot``'s job is settled and its last hook has run: the slot has nothing in hand."""
        self._slots[slot].busy = 0

    # -- the worker as a whole: written by its loop ----------------------------------

    def succeeded(self, job_id: str) -> None:
        """``job_id`` succeeded; the worker will finish it in the broker later."""
        self._append("done", job_id)

    def settled(self) -> None:
        """Every job reported by :meth:`succeeded` is finished in the broker."""
        self._header.done_size = 0

    def successes(self) -> list[str]:
        """The jobs that succeeded and were not finished in the broker when last reported."""
        return self._ids("done")

    def failing(self, job_id: str) -> bool:
        """``job_id`` raised and failed; the worker writes its failure later (with the
        others of its batch). Until then it counts as in hand (:meth:`in_hand`), so a
        worker that dies first has it blamed as if it died running it. ``False``: no room
        to record it (the worker must write its failure now)."""
        return self._append("failing", job_id)

    def failures_written(self) -> None:
        """Every failure reported by :meth:`failing` is written in the broker."""
        self._header.failing_size = 0

    def _append(self, area: str, job_id: str) -> bool:
        """Add ``job_id`` to the id list ``area`` (``done`` or ``failing``); whether it fit."""
        header = self._header
        data = job_id.encode("utf-8", "surrogatepass")
        end = getattr(header, f"{area}_size")
        entry = len(data).to_bytes(2, "little") + data
        if len(data) > MAX_ID_BYTES or end + len(entry) > getattr(_Header, f"{area}_ids").size:
            return False
        ctypes.memmove(
            ctypes.addressof(header) + getattr(_Header, f"{area}_ids").offset + end, entry, len(entry)
        )
        setattr(header, f"{area}_size", end + len(entry))  # last: a reader sees whole entries only
        return True

    def _ids(self, area: str) -> list[str]:
        """The ids in the id list ``area``."""
        header = self._header
        offset = getattr(_Header, f"{area}_ids").offset
        raw = ctypes.string_at(ctypes.addressof(header) + offset, getattr(header, f"{area}_size"))
        ids, at = [], 0
        while at + 2 <= len(raw):
            size = int.from_bytes(raw[at : at + 2], "little")
            ids.append(raw[at + 2 : at + 2 + size].decode("utf-8", "surrogatepass"))
            at += 2 + size
        return ids

    def reset(self) -> None:
        """Forget everything (the manager, before starting a new worker in the slot)."""
        self._header.phase = STARTING
        self._header.done_size = 0
        self._header.failing_size = 0
        for record in self._slots:
            record.deadline = 0.0
            record.kill_at = 0.0
            record.size = 0
            record.busy = 0
            record.abandoned = 0

    # -- what the manager reads --------------------------------------------------------

    def in_hand(self) -> list[Busy]:
        """The jobs the worker has in hand, one per busy slot; empty between jobs. A job
        settled as timed out whose thread still runs is in hand too (its thread may yet
        crash the process), and so is a job that failed whose failure is not written yet
        (:meth:`failing`): if the worker dies first, or gives up writing it, the job is
        blamed as one it died with, never put back as if it had not run.

        Read after the worker died, these are the jobs it died running (or in their hooks).
        """
        found = []
        for record in self._slots:
            # An abandoned job whose thread still runs counts: it may yet kill the process.
            if record.busy or (record.abandoned and record.deadline > 0):
                found.append(Busy(*self._id_of(record), began_at=record.began_at))
        running = {busy.job_id for busy in found}
        found += [Busy(job_id) for job_id in self._ids("failing") if job_id not in running]
        return found

    def running(self) -> list[Running]:
        """The jobs running under a time limit now (abandoned ones included)."""
        found = []
        for slot, record in enumerate(self._slots):
            seq, deadline, kill_at, limit = record.seq, record.deadline, record.kill_at, record.limit
            if deadline <= 0:
                continue
            job_id, digest = self._id_of(record)
            found.append(
                Running(
                    slot=slot,
                    seq=seq,
                    job_id=job_id,
                    digest=digest,
                    deadline=deadline,
                    kill_at=kill_at,
                    limit=limit,
                    abandoned=bool(record.abandoned),
                )
            )
        return found

    def seq(self, slot: int = 0) -> int:
        """How many jobs ``slot`` has started."""
        return int(self._slots[slot].seq)

    @staticmethod
    def _id_of(record: _SlotRecord) -> tuple[str | None, bytes | None]:
        """The slot's job id, or (too long to report) ``None`` and its digest."""
        size = record.size
        if not size:
            return None, ctypes.string_at(ctypes.addressof(record) + _SlotRecord.digest.offset, DIGEST_BYTES)
        raw = ctypes.string_at(ctypes.addressof(record) + _SlotRecord.job_id.offset, size)
        return raw.decode("utf-8", "surrogatepass"), None
