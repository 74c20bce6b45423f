"""The Lua scripts behind every multi-key operation, one typed method each.

Each script in ``lua/`` starts with a comment listing its KEYS and ARGV and what it reads,
writes and returns; this module only packs arguments and unpacks replies. Scripts are
sent once and then called by SHA (redis-py's :class:`~redis.commands.core.Script` runs
``EVALSHA`` and reloads after a ``SCRIPT FLUSH`` or a failover).

Every script is prefixed with the definitions it uses of :data:`qw_redis.keys.LUA_PRELUDE`
(the key patterns) and ``lua/common.lua`` (shared helpers), so no key pattern is spelt
twice (:func:`used_helpers`: Redis runs all of a script's text on every call).

Redis errors are not translated here; :class:`~qw_redis.broker.RedisBroker` does that at
its boundary.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import re
import secrets
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any, AnyStr, NamedTuple

import attrs
import redis
import redis.client
import redis.exceptions
from redis.commands.core import Script

from qw_core.unique import Unique
from qw_redis import codec, keys
from qw_redis.codec import Stored
from qw_redis.connection import ERRORS

#: Most wake-up tokens kept on one wake list: enough to wake every blocked worker of a
#: host, few enough that stale tokens cost little.
WAKE_CAP = 64
#: Most ids a single recover.lua call moves, so one dead worker never blocks Redis long.
RECOVER_BATCH = 1000
#: Most due delayed jobs a single promote.lua call moves.
PROMOTE_BATCH = 1000
#: Seconds a producer's last call is remembered, to recognise it if the client sends it
#: again (far longer than redis-py's retries of one command last).
PRODUCER_TTL = 600
#: Most origins whose ``queue.lua`` keys a :class:`Scripts` keeps built (it starts over
#: past that: a producer that queues to ever new workers keeps no more).
_KEYS_CACHED = 256
#: Seconds a schedule's last tick is kept after the last manager declaring it stopped
#: (a week: a downtime longer than that starts the schedule afresh).
TICK_TTL = 7 * 86400


#: Compact JSON of a script argument, its encoder built once (``json.dumps`` with options
#: builds one per call).
_dumps = codec.dumps_known


def _read(name: str) -> str:
    return (resources.files("qw_redis") / "lua" / name).read_text(encoding="utf-8")


@functools.cache
def script_source(name: str, prefix: str = "") -> str:
    """The full text sent to Redis for ``lua/<name>``: the prelude's constants and key
    builders (for the keyspace of key prefix ``prefix``, see :class:`keys.KeySchema`) and
    the helpers of ``lua/common.lua`` that the script uses (:func:`used_helpers`), then
    the script."""
    constants = (
        f"local WAKE_CAP = {WAKE_CAP}\nlocal PRODUCER_TTL = {PRODUCER_TTL}\n"
        f"local V1_MARKER = '{codec.MARKER}'\n"
    )
    script = _read(name)
    return f"{used_helpers(keys.lua_prelude(prefix) + constants + _read('common.lua'), script)}\n{script}"


_DEFINED = re.compile(r"local (?:function )?([A-Za-z_]\w*)")
_WORD = re.compile(r"[A-Za-z_]\w*")


def _definitions(helpers: str) -> list[tuple[str, str]]:
    """The top-level definitions of Lua text ``helpers``, in order: (name, text) each.

    A definition starts at a line ``local <name>`` or ``local function <name>`` at the
    margin and runs on over the indented lines after it and a closing ``end`` at the
    margin; comments at the margin stand between definitions (and are left out).

    :raises ValueError: a line at the margin is none of these (a helper file must hold
        definitions only, so that none is dropped unseen).
    """
    found: list[tuple[str, list[str]]] = []
    for line in helpers.splitlines(keepends=True):
        defined = _DEFINED.match(line)
        if defined:
            found.append((defined.group(1), [line]))
        elif line.startswith("--"):
            continue
        elif found and (not line.strip() or line[0] in " \t" or line.rstrip() == "end"):
            found[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"a Lua helper line is not part of a definition: {line.rstrip()!r}")
    return [(defined, "".join(lines)) for defined, lines in found]


def used_helpers(helpers: str, script: str) -> str:
    """The definitions of ``helpers`` (see :func:`_definitions`) that ``script`` uses, and
    those they use in turn, in their order.

    Redis runs a script's whole text on every call, so each helper defined costs every call
    (a closure made): the prelude and common.lua define some seventy, and the script that
    queues a job uses a third of them. A name counts as used wherever it stands as a word,
    but in a line that is all comment: keeping one too many costs little, dropping one
    used would fail the script (an undefined global), which any run of it shows.
    """
    definitions = _definitions(helpers)
    text = dict(definitions)
    used: set[str] = set()
    pending = [script]
    while pending:
        lines = pending.pop().splitlines()
        code = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
        for word in set(_WORD.findall(code)):
            if word in text and word not in used:
                used.add(word)
                pending.append(text[word])
    return "".join(body for defined, body in definitions if defined in used)


class FailedEntry(NamedTuple):
    """One job for ``fail.lua``: its id, its record and failure (JSON), and whether to keep
    its hash as it is (it could not be read)."""

    job_id: str
    record: str
    failure: str
    keep_hash: bool


@attrs.frozen
class Taken:
    """One job handed out by ``take.lua``.

    :param id: the job id.
    :param source: ``"w"`` (sent to the worker directly), ``"m"`` (the manager's queue) or
        ``"a"`` (the shared queue).
    :param suspect: it was a suspect (see ``Job.suspect``): run it alone.
    :param fields: the job hash (``{}`` if it is missing), or ``None`` when it was too
        large or not a hash.
    :param marker: the job's ``qw:job:<id>``, ``None`` if it has none.
    :param size: the job's size in bytes when it was too large, else ``0``.
    :param wrong_type: the type of ``job:<id>`` when it is not a hash, else ``""``.
    :param marker_type: the type of ``qw:job:<id>`` when it is not a string, else ``""``.
    """

    id: str
    source: str
    fields: dict[str, str] | None
    marker: str | None = None
    size: int = 0
    wrong_type: str = ""
    marker_type: str = ""
    suspect: bool = False


@attrs.frozen
class TakeReply:
    """What one ``take.lua`` call did.

    :param finished: for each id asked to be finished, whether it was still held.
    :param taken: the jobs handed out.
    :param broken: queue keys skipped because they are not lists: key → its type.
    """

    finished: list[bool]
    taken: list[Taken]
    broken: dict[str, str]


def _taken(job_id: str, source: str, fields: Any, marker: Any = None) -> Taken:
    suspect = source.startswith("!")  # see take.lua: a prefix (a queue's name may end in '!')
    source = source.removeprefix("!")
    if isinstance(fields, int):
        return Taken(job_id, source, None, size=fields, suspect=suspect)
    if isinstance(fields, str):
        return Taken(job_id, source, None, wrong_type=fields, suspect=suspect)
    if isinstance(marker, list):
        return Taken(job_id, source, None, marker_type=str(marker[0]), suspect=suspect)
    return Taken(job_id, source, _pairs(fields), marker=marker, suspect=suspect)


@attrs.frozen
class Recovery:
    """What one ``recover.lua`` call did.

    :param moved: ids put back on their queues.
    :param left: ids still on the worker's list (``poison`` included).
    :param skipped: nothing was done: the reaper found the worker alive (it has a
        heartbeat), or gone (it deregistered itself, holding nothing, since it was listed).
    :param poison: ids recovered too often, left on the list for the caller to fail.
    """

    moved: int
    left: int
    skipped: bool = False
    poison: list[str] = attrs.field(factory=list)


def _length_prefixed(raw: AnyStr, colon: AnyStr) -> list[AnyStr]:
    """The parts of ``raw``, each written as ``<length>:<part>``."""
    parts = []
    at = 0
    while at < len(raw):
        found = raw.find(colon, at)
        length = raw[at:found]
        if found < 0 or not length.isdigit():
            raise ValueError(f"a hand-off entry has no length at byte {at}")
        end = found + 1 + int(length)
        if end > len(raw):
            raise ValueError(f"a hand-off entry is cut short at byte {len(raw)}")
        parts.append(raw[found + 1 : end])
        at = end
    return parts


def handed_off(packed: str) -> Taken:
    """The job in a hand-off entry (``qw:handoff:<w>``, written by ``queue.lua``): its id,
    source, marker and fields, each as ``<length>:<bytes>``."""
    if packed.isascii():  # a byte a character: the lengths count both (the usual case)
        parts = _length_prefixed(packed, ":")
    else:  # the lengths count bytes
        raw = _length_prefixed(packed.encode("utf-8", ERRORS), b":")
        parts = [part.decode("utf-8", ERRORS) for part in raw]
    if len(parts) < 3 or len(parts) % 2 == 0:
        raise ValueError(f"a hand-off entry has {len(parts)} parts")
    job_id, source, marker, *fields = parts
    return _taken(job_id, source, fields, marker)


#: A unique key's mode as the scripts write it (see ``claim_unique`` in lua/common.lua).
_MODES = {"end": "e", "start": "s", "ttl": "t"}


def unique_entry(position: int, unique: Unique) -> list[Any]:
    """``unique`` for a queueing script: [position (from 1), key, mode, TTL in ms]."""
    ttl_ms = max(1, math.ceil(unique.ttl * 1000)) if unique.ttl is not None else 0
    return [position, unique.key, _MODES[unique.until], ttl_ms]


def _uniques_arg(uniques: Sequence[Unique | None] | None) -> str:
    """The unique keys of a batch (one per job, ``None`` for none) as a script argument."""
    if not uniques:
        return ""
    entries = [unique_entry(i, unique) for i, unique in enumerate(uniques, 1) if unique is not None]
    return _dumps(entries) if entries else ""


def holders(reply: Any) -> dict[int, str]:
    """What a queueing call with unique keys answered: position in the batch (from 0) →
    the id of the job that holds that job's key (it was not queued); ``{}`` for a reply
    without unique keys (a number)."""
    if isinstance(reply, (int, bytes)) or (isinstance(reply, str) and not reply.startswith("[")):
        return {}
    flat = json.loads(reply)
    return {int(flat[i]) - 1: str(flat[i + 1]) for i in range(1, len(flat), 2)}


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    it = iter(flat)
    return dict(zip(it, it, strict=False))


def _flatten(stored: Stored) -> list[str]:
    """A stored job as script arguments: its marker, the number of fields, the pairs."""
    return [stored.marker, str(len(stored.fields)), *_pairs_of(stored.fields)]


def _pairs_of(fields: Mapping[str, str]) -> list[str]:
    return [text for pair in fields.items() for text in pair]


class _Producer(threading.local):
    """The producer a thread is (see ``replayed`` in lua/common.lua): a key of its own, its
    call numbers, and the ``queue.lua`` keys built with that key.

    A producer's key remembers only its last call, so its calls must not overlap: a call
    that redis-py sends again after a lost reply, once another call of the same key ran
    meanwhile, is not recognised and runs again (a job that ran since is queued again). A
    broker serves one thread, but :class:`qw_redis.Client` is a redis-py client, which
    threads share: so each thread that calls is a producer of its own. So is each process:
    a forked child gets new producers (:func:`_renew_producers`), else its calls and its
    parent's would be numbered alike under one key, and the second call of a number would
    be taken for the first sent again, its jobs silently not queued.
    """

    def __init__(self, schema: keys.KeySchema) -> None:
        self.key = schema.producer(secrets.token_hex(8))
        self.calls = itertools.count(1)
        self.queue_keys: dict[str, list[str]] = {}


#: Every :class:`Scripts`, for :func:`_renew_producers`.
_EVERY: weakref.WeakSet[Scripts] = weakref.WeakSet()


def _renew_producers() -> None:
    """In a forked child: a new producer for every :class:`Scripts` (see :class:`_Producer`).

    redis-py's pools open new connections after a fork by themselves, so a broker made
    before a fork (a module-level one, in a server that preloads the application) goes
    on working in the child; this keeps its queueing calls apart from the parent's.
    """
    for scripts in list(_EVERY):
        scripts._local = _Producer(scripts._keys)


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_renew_producers)


class Scripts:
    """The scripts, registered on one client.

    :param client: a client made by :func:`qw_redis.connection.qw_client`.
    :param schema: the keyspace the scripts work in (single-node: no prefix).
    """

    def __init__(self, client: redis.Redis, schema: keys.KeySchema = keys.SINGLE_NODE) -> None:
        self._client = client
        self._keys = schema
        source = functools.partial(script_source, prefix=schema.prefix)
        self._local = _Producer(schema)
        _EVERY.add(self)
        self._queue = client.register_script(source("queue.lua"))
        self._take = client.register_script(source("take.lua"))
        self._finish = client.register_script(source("finish.lua"))
        self._finish_result = client.register_script(source("finish_result.lua"))
        self._fail = client.register_script(source("fail.lua"))
        self._retry = client.register_script(source("retry.lua"))
        self._release = client.register_script(source("release.lua"))
        self._recover = client.register_script(source("recover.lua"))
        self._beat = client.register_script(source("beat.lua"))
        self._forget_manager = client.register_script(source("forget_manager.lua"))
        self._deregister = client.register_script(source("deregister.lua"))
        self._requeue = client.register_script(source("requeue_failed.lua"))
        self._queue_delayed = client.register_script(source("queue_delayed.lua"))
        self._promote = client.register_script(source("promote.lua"))
        self._purge_failed = client.register_script(source("purge_failed.lua"))
        self._requeue_batch = client.register_script(source("requeue_failed_batch.lua"))
        self._purge_upto = client.register_script(source("purge_failed_upto.lua"))
        self._stray = client.register_script(source("stray.lua"))
        self._move = client.register_script(source("move.lua"))
        self._sweep_markers = client.register_script(source("sweep_markers.lua"))
        self._tick = client.register_script(source("tick.lua"))
        self._declare = client.register_script(source("declare.lua"))
        self._note_run = client.register_script(source("note_run.lua"))

    @property
    def _producer(self) -> str:
        """This thread's producer key (see :class:`_Producer`)."""
        return self._local.key

    def _call_number(self) -> str:
        return str(next(self._local.calls))

    def _queue_keys(self, origin: str) -> list[str]:
        """``queue.lua``'s keys for the queue ``origin`` stands for, built once per origin
        and thread (a producer queues to a few places, over and over)."""
        cached = self._local.queue_keys
        found = cached.get(origin)
        if found is None:
            found = [
                self._keys.queue_list(origin),  # a worker's name, like a manager's, is its list's
                self._keys.wake(origin),
                self._producer,
                self._keys.QUEUES,
                self._keys.idle(origin),
                self._keys.ORIGIN,
            ]
            if len(cached) >= _KEYS_CACHED:
                cached.clear()
            cached[origin] = found
        return found

    def _evalsha(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """``script`` run by ``EVALSHA`` straight through the client: what
        :class:`~redis.commands.core.Script` does, less its layers of calls, on the path
        of every job queued one at a time; a server that lacks the script (flushed,
        failed over) gets it from ``Script``, which loads it."""
        try:
            return self._client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except redis.exceptions.NoScriptError:
            return script(keys=keys, args=args)

    def queue(
        self,
        *,
        origin: str,
        worker: bool,
        jobs: Sequence[tuple[str, Stored]],
        uniques: Sequence[Unique | None] | None = None,
        pipe: redis.client.Pipeline | None = None,
    ) -> dict[int, str]:
        """Queue ``jobs`` (id, hash fields) on the queue ``origin`` stands for (see
        :func:`keys.origin`), or on worker ``origin``'s list if ``worker``; the first ones go
        straight to waiting workers, the rest get a wake-up token each. See ``lua/queue.lua``.

        :param uniques: each job's unique key (``None``: none), or ``None`` for no job.
        :param pipe: queue the call on this pipeline instead (see :meth:`replicated`);
            ``{}`` is returned, the reply comes with the pipeline's (read it with :func:`holders`).
        :return: see :func:`holders`.
        """
        batch = [[job_id, _pairs_of(stored.fields), stored.marker] for job_id, stored in jobs]
        args = [_dumps(batch), self._call_number(), origin, "" if worker else "1", _uniques_arg(uniques)]
        if pipe is not None:
            self._queue(keys=self._queue_keys(origin), args=args, client=pipe)
            return {}
        return holders(self._evalsha(self._queue, self._queue_keys(origin), args))

    def replicated(
        self, call: Callable[[redis.client.Pipeline], object], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """Run ``call(pipe)`` (which queues one producing script call on ``pipe``), then
        ``WAIT replicas timeout_ms`` on the same connection; the script's reply, and how
        many replicas acknowledged.

        ``WAIT`` waits for the connection's last write, and a call that redis-py re-sends
        on a new connection after a lost reply may find itself replayed (see ``replayed``
        in lua/common.lua) and write nothing: so this producer's key is refreshed in
        between, a write that every replica acknowledging it has received the call's too.
        """
        pipe = self._client.pipeline(transaction=False)
        call(pipe)
        pipe.pexpire(self._producer, PRODUCER_TTL * 1000)
        pipe.wait(replicas, timeout_ms)
        replies = pipe.execute()
        return replies[0], int(replies[-1])

    def queue_delayed(
        self,
        *,
        origin: str,
        delay: float,
        jobs: Sequence[tuple[str, Stored]],
        at: float | None = None,
        uniques: Sequence[Unique | None] | None = None,
        pipe: redis.client.Pipeline | None = None,
    ) -> dict[int, str]:
        """Queue ``jobs`` to wait ``delay`` seconds (or until ``at``, seconds since the epoch),
        then go to ``origin``'s queue (``""``: shared). ``uniques``, ``pipe`` and what it
        returns: as for :meth:`queue`."""
        batch = [[job_id, _pairs_of(stored.fields), stored.marker] for job_id, stored in jobs]
        payload = _dumps(batch)
        reply = self._queue_delayed(
            keys=[self._keys.delayed(origin), self._keys.DUE, self._producer, self._keys.QUEUES],
            args=[
                repr(float(delay)),
                origin,
                payload,
                self._call_number(),
                "" if at is None else repr(at),
                _uniques_arg(uniques),
            ],
            client=pipe,
        )
        return {} if pipe is not None else holders(reply)

    def promote(self, *, limit: int = PROMOTE_BATCH) -> tuple[int, float | None]:
        """Move due delayed jobs to their queues; see ``lua/promote.lua``.

        :return: how many moved, and seconds until the next delayed job is due (``None``:
            none is delayed).
        """
        moved, next_ms = self._promote(keys=[self._keys.DUE, self._keys.ORIGIN], args=[limit])
        return int(moved), None if int(next_ms) < 0 else int(next_ms) / 1000

    def note_run(self, *, manager: str, count: int, keep: int) -> int:
        """Add ``count`` to ``manager``'s jobs begun in the server's current minute, kept
        ``keep`` seconds; the minute (seconds since the epoch)."""
        return int(self._note_run(keys=[], args=[manager, count, keep]))

    def purge_failed(self, job_ids: Sequence[str]) -> int:
        """Delete ``job_ids`` from the failed registry; how many were there."""
        if not job_ids:
            return 0
        return int(self._purge_failed(keys=[self._keys.FAILED], args=list(job_ids)))

    def take(
        self,
        *,
        manager: str,
        worker: str,
        finished: Sequence[str],
        held: Sequence[str],
        limit: int,
        max_size: int,
        wait_ms: int = 0,
        origins: Sequence[str] = (keys.SHARED_ORIGIN,),
        keep_finished: float = 0.0,
    ) -> TakeReply:
        """Finish ``finished`` and take up to ``limit`` jobs; see ``lua/take.lua``.

        :param wait_ms: if nothing is taken, register the worker as waiting for jobs for
            this long (0: it will not wait), so that a job queued meanwhile is handed to it.
        :param keep_finished: seconds to note ``finished`` in :data:`self._keys.FINISHED` (0: not).
        :param origins: the queues served after the manager's, in priority order (see
            :func:`keys.origin`).
        """
        served = [
            key
            for origin in origins
            for key in (self._keys.queue_list(origin), self._keys.wake(origin), self._keys.idle(origin))
        ]
        reply: list[Any] = self._take(
            keys=[
                self._keys.queue(worker),
                self._keys.queue(manager),
                self._keys.ORIGIN,
                self._keys.wake(manager),
                self._keys.DUE,
                self._keys.wake(worker),
                self._keys.idling(worker),
                self._keys.handoff(worker),
                self._keys.idle(manager),
                *served,
            ],
            args=[
                manager,
                limit,
                len(held),
                max_size,
                json.dumps(list(held), ensure_ascii=False) if held else "[]",
                wait_ms,
                worker,
                len(origins),
                repr(float(keep_finished)),
                *origins,
                *finished,
            ],
        )
        return TakeReply(
            finished=[flag == 1 for flag in reply[0]],
            taken=[_taken(*entry) for entry in reply[2:]],
            broken=dict(reply[1]),
        )

    def finish_result(self, *, worker: str, job_id: str, value: str, ttl_ms: int) -> bool:
        """Finish ``job_id``, guarded, and keep its result; see ``lua/finish_result.lua``."""
        held = self._finish_result(
            keys=[
                self._keys.queue(worker),
                self._keys.ORIGIN,
                self._keys.result(job_id),
                self._keys.done(job_id),
            ],
            args=[value, worker, ttl_ms, job_id],
        )
        return int(held) == 1

    def finish(self, *, worker: str, job_ids: Sequence[str], keep_finished: float = 0.0) -> list[bool]:
        """Finish ``job_ids``, guarded; which of them ``worker`` still held. They are noted
        in :data:`self._keys.FINISHED` for ``keep_finished`` seconds (0: not)."""
        if not job_ids:
            return []
        reply: list[int] = self._finish(
            keys=[self._keys.queue(worker), self._keys.ORIGIN], args=[repr(float(keep_finished)), *job_ids]
        )
        return [flag == 1 for flag in reply]

    def fail(
        self,
        *,
        worker: str,
        jobs: Sequence[FailedEntry],
        max_age: float | None = None,
        max_count: int | None = None,
    ) -> list[bool]:
        """Move held jobs to the failed registry, stamped with the server's time, and trim
        it to ``max_age``/``max_count``; per job, ``False`` if ``worker`` no longer held it."""
        args: list[str] = [
            "" if max_age is None else repr(float(max_age)),
            "" if max_count is None else str(max_count),
        ]
        for entry in jobs:
            args += [entry.job_id, entry.record, entry.failure, "1" if entry.keep_hash else "0"]
        reply: list[int] = self._fail(
            keys=[self._keys.queue(worker), self._keys.FAILED, self._keys.ORIGIN], args=args
        )
        return [flag == 1 for flag in reply]

    def retry(self, *, worker: str, job_id: str, stored: Stored, delay: float) -> bool:
        """Re-store a held job and queue it again (after ``delay`` seconds)."""
        result = self._retry(
            keys=[
                self._keys.queue(worker),
                self._keys.job(job_id),
                self._keys.ORIGIN,
                self._keys.DUE,
            ],
            args=[job_id, repr(max(0.0, float(delay))), *_flatten(stored)],
        )
        return bool(result)

    def release(self, *, worker: str, job_ids: Sequence[str]) -> int:
        """Put held jobs back at the front of their queues; how many were held."""
        if not job_ids:
            return 0
        result = self._release(
            keys=[self._keys.queue(worker), self._keys.ORIGIN],
            args=list(job_ids),
        )
        return int(result)

    def recover(
        self,
        *,
        manager: str,
        worker: str,
        if_dead: bool = False,
        max_recoveries: int | None = None,
        crashed_job: str | None = None,
        suspects: Sequence[str] = (),
        batch: int = RECOVER_BATCH,
    ) -> Recovery:
        """Move one batch of a dead worker's jobs back; see ``lua/recover.lua``.

        :param if_dead: do nothing if the worker has a heartbeat (the reaper's check).
        :param max_recoveries: count each job's recoveries; one past this is poison.
        :param crashed_job: count only this job's (the one the worker died running).
        :param suspects: jobs to mark as suspects when they are put back.
        """
        reply: list[Any] = self._recover(
            keys=[
                self._keys.queue(worker),
                self._keys.manager_workers(manager),
                self._keys.ORIGIN,
                self._keys.queue(manager),
                self._keys.wake(manager),
                self._keys.heartbeat(worker),
                self._keys.RECOVERIES,
            ],
            args=[
                worker,
                batch,
                "1" if if_dead else "0",
                "" if max_recoveries is None else max_recoveries,
                manager,
                crashed_job or "",
                json.dumps(list(suspects), ensure_ascii=False) if suspects else "",
            ],
        )
        moved, left, skipped, *poison = reply
        poison_ids = [str(p) for p in poison]
        return Recovery(moved=int(moved), left=int(left), skipped=skipped == 1, poison=poison_ids)

    def beat(self, *, manager: str, token: str, workers: Mapping[str, str], ttl_ms: int) -> dict[str, str]:
        """Refresh the heartbeats of ``manager`` and ``workers`` (name → token); see ``lua/beat.lua``.

        :return: name → previous token (``""``: none) of each heartbeat that was not ours.
        """
        names = list(workers)
        reply: list[str] = self._beat(
            keys=[
                self._keys.ALL_MANAGERS,
                self._keys.MANAGERS,
                self._keys.manager_workers(manager),
                self._keys.heartbeat(manager),
                *(self._keys.heartbeat(name) for name in names),
            ],
            args=[manager, token, ttl_ms, *(text for name in names for text in (name, workers[name]))],
        )
        return _pairs(reply)

    def deregister(self, *, manager: str, worker: str) -> None:
        """Take ``worker`` out of ``manager``'s registration; see ``lua/deregister.lua``."""
        self._deregister(
            keys=[
                self._keys.manager_workers(manager),
                self._keys.ALL_MANAGERS,
                self._keys.heartbeat(worker),
                self._keys.idling(worker),
                self._keys.handoff(worker),
            ],
            args=[worker, manager],
        )

    def forget_manager(self, manager: str) -> bool:
        """Drop a dead manager that has no workers left from the membership keys."""
        result = self._forget_manager(
            keys=[
                self._keys.ALL_MANAGERS,
                self._keys.MANAGERS,
                self._keys.heartbeat(manager),
                self._keys.manager_workers(manager),
            ],
            args=[manager],
        )
        return bool(result)

    def requeue_failed(self, *, job_id: str, stored: Stored, unique: Unique | None = None) -> bool:
        """Move a failed job back to its queue, stored anew as ``stored``, taking its
        ``unique`` key (refused while another job holds it)."""
        result = self._requeue(
            keys=[
                self._keys.FAILED,
                self._keys.failed_job(job_id),
                self._keys.job(job_id),
                self._keys.invalid_job(job_id),
                self._keys.ALL_JOBS,
                self._keys.WAKE_ALL,
                self._producer,
            ],
            args=[self._call_number(), job_id, *_flatten(stored), _uniques_arg([unique])],
        )
        return bool(result)

    def requeue_failed_batch(self, jobs: Sequence[tuple[str, float, Stored, Unique | None]]) -> list[str]:
        """Requeue the failed jobs ``jobs`` (id, score in ``qw:failed`` when read, the job
        stored anew, its unique key) that are still those failures; the ids requeued. See
        ``lua/requeue_failed_batch.lua``."""
        if not jobs:
            return []
        batch = [
            [job_id, repr(score), _pairs_of(stored.fields), stored.marker]
            + ([] if unique is None else [unique_entry(1, unique)])
            for job_id, score, stored, unique in jobs
        ]
        payload = _dumps(batch)
        flags = str(
            self._requeue_batch(keys=[self._keys.FAILED, self._producer], args=[self._call_number(), payload])
        )
        return [job_id for (job_id, *_), flag in zip(jobs, flags, strict=True) if flag == "1"]

    def purge_failed_upto(self, *, upto: float, limit: int) -> int:
        """Delete up to ``limit`` of the oldest failed jobs that failed at ``upto`` or
        before; how many. See ``lua/purge_failed_upto.lua``."""
        return int(
            self._purge_upto(
                keys=[self._keys.FAILED, self._producer], args=[self._call_number(), repr(upto), limit]
            )
        )

    def stray(self) -> dict[str, int]:
        """Names no running manager or worker has whose queue holds jobs, with their counts."""
        flat = self._stray(keys=[self._keys.QUEUES, self._keys.ALL_MANAGERS])
        return {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    def move(self, *, name: str, to: str | None, limit: int) -> int:
        """Move up to ``limit`` jobs from ``name``'s list to ``to``'s queue (``None``: shared)."""
        return int(
            self._move(
                keys=[
                    self._keys.queue(name),
                    self._keys.queue(to),
                    self._keys.wake(to),
                    self._keys.ORIGIN,
                    self._keys.ALL_MANAGERS,
                    self._keys.QUEUES,
                ],
                args=[name, limit],
            )
        )

    def sweep_markers(self, marker_keys: Sequence[str]) -> int:
        """Drop those of ``marker_keys`` whose job an original worker finished; how many."""
        return int(self._sweep_markers(keys=list(marker_keys))) if marker_keys else 0

    def tick(
        self,
        *,
        schedule_id: str,
        tick: float,
        manager: str,
        job_id: str,
        origin: str,
        stored: Stored,
        unique: Unique | None = None,
    ) -> tuple[bool, list[str]]:
        """Enqueue one tick, once; see ``lua/tick.lua``. A job with a ``unique`` key is
        queued only if it takes the key (else the tick's job is the holder).

        :return: whether this call enqueued it, and the schedule's last tick after the call
            (tick, manager, at, job id).
        """
        reply: list[Any] = self._tick(
            keys=[
                self._keys.tick(schedule_id),
                self._keys.queue_list(origin),
                self._keys.wake(origin),
                self._keys.QUEUES,
            ],
            args=[
                repr(float(tick)),
                manager,
                job_id,
                origin,
                TICK_TTL * 1000,
                stored.marker,
                _uniques_arg([unique]),
                *_pairs_of(stored.fields),
            ],
        )
        return int(reply[0]) == 1, [str(part) for part in reply[1:]]

    def declare(self, *, manager: str, declarations: Mapping[str, str], ttl_ms: int) -> dict[str, list[str]]:
        """Declare (or, with none, withdraw) ``manager``'s schedules; see ``lua/declare.lua``.

        :return: schedule id → its last tick (tick, manager, at, job id), for those with one.
        """
        flat: list[str] = self._declare(
            keys=[self._keys.declared(manager), self._keys.SCHEDULERS],
            args=[manager, ttl_ms, TICK_TTL * 1000, *_pairs_of(declarations)],
        )
        return {str(flat[i]): [str(part) for part in flat[i + 1 : i + 5]] for i in range(0, len(flat), 5)}
