"""A worker's session: the :class:`~qw_core.broker.Consumer` role of the Redis broker.

One part of :class:`~qw_redis.broker.RedisBroker`, over the connection of :mod:`qw_redis.base`.

Waiting. An idle worker does not poll: :meth:`ConsumerPart.take` runs ``take.lua`` and,
finding nothing, blocks in ``BLPOP qw:wake:<w> qw:wake:<m> qw:wake:all`` for at most
``RedisOptions.block_slice`` (0.5 s) at a time, then runs ``take.lua`` again. Jobs
queued through qw push a token onto the wake list of their queue (a job sent to a worker
directly, onto the worker's own), so a job for a manager wakes its workers as fast as a
shared one (the original made it wait up to 10 s behind ``BRPOPLPUSH all:jobs``). A job
pushed by hand sends no token and is seen at the next slice. A token only means "look
again": the job itself never leaves its queue except by ``take.lua``, so a popped token
cannot lose a job, and ``take.lua`` deletes the tokens of a queue it finds empty so stale
ones do not make workers spin.

Hand-off. A wake-up costs a woken worker a second round trip (the take), so a job queued
while workers wait skips it: the take that found nothing registers the worker as waiting
(``qw:idling:<w>``, listed in ``qw:idle:<m>`` and ``qw:idle:all``), and ``queue.lua``
takes the job on a waiting worker's behalf, exactly as ``take.lua`` would (the id onto
the tail of ``<w>:jobs``, its origin recorded), and puts its data on
``qw:handoff:<w>``, one of the keys the worker's ``BLPOP`` waits on: the job arrives with
the reply of the wait. The job is held from the moment it is queued, so a lost reply
loses nothing (the next take hands the job out as a leftover, and deletes the unread
entry so it cannot run twice) and a worker that dies has it recovered with the rest of
its list. A take never returns with its worker still registered, and a worker's
recovery ends its registration, so no job is handed to a worker that does not wait.

Delayed jobs. Before it blocks, an idle taker moves the due delayed jobs and learns when
the next one is due; queueing or retrying a delayed job pushes a token, so a blocked
taker learns of an earlier due time too. Redis ends a blocking wait only on a tick of its
timer (``1 / hz``, 100 ms by default), so the taker blocks until a tick before the due
time and waits out the rest itself, looking again every :data:`DUE_STEP` (5 ms): a due
job starts within milliseconds, and so does a job queued in that last tick.

Where a job goes back to (retry, release, recovery) is recorded by ``take.lua`` in
``qw:origin`` when the job is taken, for qw's jobs and hand-written ones alike, so no
script has to parse a job's JSON.

Unreadable jobs. A hash over ``max_job_size`` (checked inside ``take.lua``, so its data
never crosses the network) or one whose qw marker cannot be decoded is not handed to the
target: the broker moves it to the failed registry with a ``Failure`` of kind
``"invalid"``, keeping the hash untouched under ``qw:invalid:<id>`` so that
:meth:`~qw_redis.administering.AdministratorPart.requeue_failed` can restore it (after the
limit is raised, say).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import cast

import attrs

from qw_core.errors import InvalidJob, JobTooLarge
from qw_core.models import DEFAULT_QUEUE, Failure, Job
from qw_core.policy import DEFAULT_FAILED_LIMITS, FailedLimits
from qw_core.results import check_ttl
from qw_redis import codec, keys
from qw_redis.base import MIN_BLOCK, RedisBase, log, translated
from qw_redis.scripts import FailedEntry, Taken, handed_off

#: Most jobs one fail.lua call moves to the failed registry (a record holds a traceback:
#: a few KiB at most, as Python shortens deep recursion).
FAIL_BATCH = 100
#: How long a nudge nobody waited for is kept (see :meth:`ConsumerPart.nudge`).
NUDGE_TTL_MS = 60_000
#: Within a timer tick of the next due time a taker waits here, not in Redis, looking
#: again this often (seconds): a job queued meanwhile may be due sooner.
DUE_STEP = 0.005
#: Seconds between two log lines about the same queue key of the wrong type.
BROKEN_REPORT_EVERY = 60.0
#: Redis's timer period when the server does not say (``INFO`` without ``hz``): its default.
DEFAULT_TIMER_TICK = 0.1


class ConsumerPart(RedisBase):
    """The consuming methods of :class:`~qw_redis.broker.RedisBroker`."""

    @translated
    def register_worker(self, *, manager: str, worker: str) -> None:
        """Add ``worker`` to ``<manager>:workers`` (the original protocol's registration) and
        note its manager in ``qw:manager-of``, where a job queued straight onto the worker
        goes back if it is settled before the worker took it (``home_of`` in common.lua)."""
        manager, worker = self.check_name(manager), self.check_name(worker)
        pipe = self._client.pipeline(transaction=False)
        pipe.sadd(self._keys.manager_workers(manager), worker)
        pipe.hset(self._keys.MANAGER_OF, worker, manager)
        pipe.execute()

    @translated
    def take(
        self,
        *,
        manager: str,
        worker: str,
        finished: Sequence[str] = (),
        held: Sequence[str] = (),
        limit: int = 1,
        timeout: float = 0.0,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        keep_finished: float = 0.0,
    ) -> list[Job]:
        self._check_cached(manager)
        self._check_cached(worker)
        served = self._served(queues)
        limit = max(0, min(limit, self.capabilities.max_take))
        deadline = time.monotonic() + timeout
        waits = limit > 0 and timeout >= MIN_BLOCK
        take = functools.partial(self._take_once, manager, worker, served=served)
        jobs = take(finished, held, limit, waits=waits, keep_finished=check_ttl(keep_finished))
        if jobs or not waits:
            return jobs
        nudge, handoff = self._keys.nudge(worker), self._keys.handoff(worker)
        wake_keys = [
            nudge,
            handoff,
            self._keys.wake(worker),
            self._keys.wake(manager),
            *map(self._keys.wake, served),
        ]
        while True:
            remaining = deadline - time.monotonic()
            # Idle anyway: move due delayed jobs, and wake up when the next one is due.
            _, due_in = self._scripts.promote()
            if due_in is not None and due_in <= min(self._timer_tick(), remaining):
                # Redis ends a blocking wait only on its timer's tick (1/hz: 100 ms by
                # default), so a job due sooner is waited for here, to the millisecond, in
                # steps: a job queued meanwhile (due sooner still, or now) is seen within one.
                time.sleep(min(due_in, DUE_STEP))
            else:
                wait = min(self._slice, remaining)
                if due_in is not None:  # wake a tick early; the rest is waited here
                    wait = min(wait, due_in - self._timer_tick())
                if wait >= MIN_BLOCK:
                    woken = self._client.blpop(wake_keys, timeout=wait)
                    if woken is not None and woken[0] == handoff:  # a job, handed to us
                        job = self._handed_off(cast("str", woken[1]), manager, worker)
                        if job is not None:
                            return [job]
                    elif woken is not None and woken[0] == nudge:  # see nudge(): return now
                        return take((), held, limit)
            if self._follow_at is not None:  # an idle worker too leaves a demoted primary
                self._follow_primary(quiet=False)
            # Registered as waiting only if it waits again: a take never returns with the
            # worker registered, so no job is handed to a worker that is not waiting.
            waits = deadline - time.monotonic() >= MIN_BLOCK
            jobs = take((), held, limit, waits=waits)
            if jobs or not waits:
                return jobs

    @translated
    def nudge(self, worker: str) -> None:
        """See :meth:`Broker.nudge`: one token on ``qw:nudge:<w>`` (never more), which
        expires after :data:`NUDGE_TTL_MS` if nobody waits."""
        self._check_cached(worker)
        pipe = self._client.pipeline(transaction=True)
        pipe.lpush(self._keys.nudge(worker), "1")
        pipe.ltrim(self._keys.nudge(worker), 0, 0)
        pipe.pexpire(self._keys.nudge(worker), NUDGE_TTL_MS)
        pipe.execute()

    def _served(self, queues: Sequence[str]) -> list[str]:
        """The origins of named queues ``queues`` (``"default"``: the shared queue), checked."""
        origins = []
        for queue in queues:
            if queue == DEFAULT_QUEUE:
                origins.append(keys.SHARED_ORIGIN)
            else:
                self._check_cached(queue)
                origins.append(keys.origin(queue=queue))
        return origins

    def _timer_tick(self) -> float:
        """Seconds between two ticks of Redis's timer (``1 / hz``), read once."""
        if self._tick is None:
            hz = self._info_field("server", "hz")
            self._tick = 1 / float(hz) if hz else DEFAULT_TIMER_TICK
        return self._tick

    def _take_once(
        self,
        manager: str,
        worker: str,
        finished: Sequence[str],
        held: Sequence[str],
        limit: int,
        *,
        waits: bool = False,
        served: Sequence[str] = (keys.SHARED_ORIGIN,),
        keep_finished: float = 0.0,
    ) -> list[Job]:
        """One ``take.lua`` call; ``waits``: if it finds nothing, the worker waits next;
        ``served``: the origins of the queues served after the manager's;
        ``keep_finished``: see :meth:`Broker.take`."""
        reply = self._scripts.take(
            manager=manager,
            worker=worker,
            finished=finished,
            held=held,
            limit=limit,
            max_size=self._options.max_job_size,
            wait_ms=self._idling_ms if waits else 0,
            origins=served,
            keep_finished=keep_finished,
        )
        if reply.broken:
            self._report_broken(reply.broken)
        jobs = []
        for item in reply.taken:
            job = self._decode_taken(item, manager, worker)
            if job is not None:
                jobs.append(job)
        return jobs

    def _handed_off(self, packed: str, manager: str, worker: str) -> Job | None:
        """The job of a hand-off entry (see ``queue.lua``); ``None`` if it was unreadable
        (moved to the failed registry), or the entry itself was: its job is then a
        leftover on the worker's list, which the next take hands out."""
        try:
            taken = handed_off(packed)
        except ValueError as exc:
            log.warning("a job handed to %s could not be read (%s); its next take has it", worker, exc)
            return None
        return self._decode_taken(taken, manager, worker)

    def _report_broken(self, broken: Mapping[str, str]) -> None:
        """Log, once a minute per key, a queue that cannot be served for its type."""
        now = time.monotonic()
        for key, kind in broken.items():
            if now - self._broken_reported.get(key, -float("inf")) >= BROKEN_REPORT_EVERY:
                self._broken_reported[key] = now
                log.error(
                    "%s is a %s, not a list: qw cannot take jobs from it and serves the other "
                    "queues (another program uses this key? rename it, or delete it if it is stray)",
                    codec.shown(key),
                    kind,
                )

    def _decode_taken(self, item: Taken, manager: str, worker: str) -> Job | None:
        """The taken job, or ``None`` after moving an unreadable one to the failed registry."""
        # Where a hash without qw's marker came from (qw's own hashes say it themselves).
        from_manager = manager if item.source == "m" else None
        from_worker = worker if item.source == "w" else None
        from_queue = keys.named_queue(item.source)
        error: InvalidJob
        if item.wrong_type:
            error = InvalidJob(f"job:{codec.shown(item.id)} is a {item.wrong_type}, not a hash")
        elif item.marker_type:
            error = InvalidJob(f"qw:job:{codec.shown(item.id)} is a {item.marker_type}, not a string")
        elif item.fields is None:
            limit = self._options.max_job_size
            error = JobTooLarge(f"job {codec.shown(item.id)} is {item.size} bytes; the limit is {limit}")
        else:
            try:
                job = codec.decode_job(
                    item.id,
                    item.fields,
                    item.marker,
                    manager=from_manager,
                    worker=from_worker,
                    queue=from_queue,
                )
                return attrs.evolve(job, suspect=True) if item.suspect else job
            except InvalidJob as exc:
                error = exc
        log.warning("job %s is unreadable, moved to the failed jobs: %s", codec.shown(item.id), error)
        job = Job(id=item.id, data=None, manager=from_manager, worker=from_worker, queue=from_queue)
        failure = Failure.from_exception(error, worker=worker, kind="invalid")
        self._fail(worker, job, failure, keep_hash=True)
        return None

    @translated
    def finish_jobs(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        return self._scripts.finish(worker=worker, job_ids=job_ids, keep_finished=check_ttl(keep_finished))

    @translated
    def finish_with_result(self, *, worker: str, job_id: str, result: str, ttl: float) -> bool:
        """See :meth:`Broker.finish_with_result`: ``finish_result.lua``; kept ``ttl`` seconds,
        at least a millisecond."""
        ttl_ms = max(1, round(1000 * check_ttl(ttl)))
        return self._scripts.finish_result(worker=worker, job_id=job_id, value=result, ttl_ms=ttl_ms)

    @translated
    def fail_job(
        self, *, worker: str, job: Job, failure: Failure, limits: FailedLimits = DEFAULT_FAILED_LIMITS
    ) -> bool:
        return self.fail_jobs(worker=worker, failures=[(job, failure)], limits=limits)[0]

    @translated
    def fail_jobs(
        self,
        *,
        worker: str,
        failures: Sequence[tuple[Job, Failure]],
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> list[bool]:
        """See :meth:`Broker.fail_jobs`: one ``fail.lua`` call per :data:`FAIL_BATCH` jobs."""
        entries = [
            FailedEntry(
                job.id,
                codec.encode_record(
                    attrs.evolve(job, attempts=job.attempts + 1)
                ),  # the run that failed counts
                codec.encode_failure(failure),
                keep_hash=False,
            )
            for job, failure in failures
        ]
        done: list[bool] = []
        for start in range(0, len(entries), FAIL_BATCH):
            done += self._scripts.fail(
                worker=worker,
                jobs=entries[start : start + FAIL_BATCH],
                max_age=limits.max_age,
                max_count=limits.max_count,
            )
        return done

    @translated
    def retry_job(self, *, worker: str, job: Job, delay: float = 0.0) -> bool:
        again = attrs.evolve(job, attempts=job.attempts + 1)
        stored = codec.encode_job(again, max_size=self._options.max_job_size)
        return self._scripts.retry(worker=worker, job_id=job.id, stored=stored, delay=delay)

    @translated
    def release_jobs(self, *, worker: str, job_ids: Sequence[str]) -> int:
        return self._scripts.release(worker=worker, job_ids=job_ids)

    @translated
    def recover_worker(
        self,
        *,
        manager: str,
        worker: str,
        max_recoveries: int | None = None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
        limits: FailedLimits = DEFAULT_FAILED_LIMITS,
    ) -> int:
        self._check_cached(manager)
        self._check_cached(worker)
        recovered = self._recover(
            manager,
            worker,
            if_dead=False,
            max_recoveries=max_recoveries,
            crashed_job=crashed_job,
            suspects=suspects,
            limits=limits,
        )
        return 0 if recovered is None else recovered.requeued

    @translated
    def deregister_worker(self, *, manager: str, worker: str) -> None:
        """See :meth:`Broker.deregister_worker`; its ``qw:manager-of`` entry then names
        another manager it is still registered under, if any (``lua/deregister.lua``)."""
        self._scripts.deregister(manager=manager, worker=worker)
