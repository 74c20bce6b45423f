"""Every Redis key qw reads or writes, and the check that keeps names from colliding.

This module is the one place a key pattern is spelt. The Lua scripts build the few keys
they derive from data (``job:<id>`` from an id popped off a list, ``<m>:jobs`` from a
recorded origin) with functions generated here (:func:`lua_prelude`). On a Redis Cluster
every key below has a shard's hash tag before it (:class:`KeySchema`, see
:mod:`qw_redis.cluster`); the single-node schema has no prefix.

The original qw 0.1.1 schema (kept exactly, see ``shared/spec/redis-protocol.md``):

=====================  ======  ==========================================================
key                    type    meaning
=====================  ======  ==========================================================
``all:managers``       set     names of the running managers
``<m>:workers``        set     names of manager ``<m>``'s running workers
``all:jobs``           list    ids any worker may take (LPUSH to queue, taken from the right)
``<m>:jobs``           list    ids only manager ``<m>``'s workers take
``<w>:jobs``           list    ids worker ``<w>`` holds (tail) or was sent directly (head)
``job:<id>``           hash    the job's data, one field per top-level key
=====================  ======  ==========================================================

What qw adds lives under ``qw:``, a prefix no queue or membership key can have (a name
is never ``qw`` and never contains ``:``):

=====================  ======  ==========================================================
``qw:job:<id>``        string  qw's own part of a job (its marker: encoding, metadata),
                               written, read and deleted with ``job:<id>`` by the same
                               scripts (see :mod:`qw_redis.codec`)
``qw:wake:all``        list    wake-up tokens for workers blocked waiting for shared jobs
``qw:wake:<m>``        list    wake-up tokens for manager ``<m>``'s blocked workers
``qw:wake:<w>``        list    wake-up tokens for jobs sent to worker ``<w>`` directly
``qw:origin``          hash    held job id → the manager whose queue it came from
                               (``""``: the shared queue); recovery, release and retry
                               put a job back where this says
``qw:delayed:<m>``     zset    job id → when (server time, seconds) a delayed or retried
                               job for manager ``<m>``'s queue is due (``qw:delayed:all``:
                               for the shared queue); its data is in ``job:<id>``. A
                               script moves it to the back of that queue when due (ZREM
                               and LPUSH in one step). One set per queue, so counting and
                               listing one queue's delayed jobs never reads another's
``qw:due``             zset    queue (``<m>``, ``""`` for the shared queue) → when its
                               soonest delayed job is due: which sets to look in, and
                               when the next job of all comes due; kept with the sets
                               by the same scripts
``qw:failed``          zset    failed job id → when it failed (the server's clock, so
                               every host agrees); trimmed to the registry's bounds on
                               each failure
``qw:failed:<id>``     hash    a failed job: ``job`` (JSON record), ``failure`` (JSON),
                               ``origin`` (as in ``qw:origin``)
``qw:invalid:<id>``    hash    the untouched hash of a failed job that could not be read
                               (too large, or not decodable), restored by a requeue
``qw:hb:<name>``       string  heartbeat of a running manager or worker: a token unique to
                               that start of the process, expiring (PX) after the
                               heartbeat TTL unless its manager refreshes it; no key
                               means the process is dead (or was cut off that long)
``qw:managers``        hash    manager name → the token of its current start: the
                               managers whose workers the reaper looks after (a process
                               that writes no heartbeat, such as the original qw, is
                               never reaped)
``qw:reaper``          string  the reaper lease: the token of the manager whose reaper
                               ran last, expiring (PX) after the reap interval
``qw:recoveries``      hash    job id → how often the job was put back because its
                               worker died holding it; cleared when it is finished or
                               failed
``qw:suspects``        set     ids of jobs put back after their worker died running them
                               beside others, so that nobody knows which one killed it:
                               the take that hands one out removes it and says so, and
                               its worker runs it alone
``qw:queues``          set     the names jobs were queued to by name (a manager's queue,
                               a worker's list), kept by the queueing scripts: ``qw
                               status`` looks through them for stray queues, which no
                               running manager or worker owns
``qw:nudge:<w>``       list    one token: ends worker ``<w>``'s wait in a take, because a job
                               it runs concurrently completed; expires after a minute
``qw:idle:all``        set     workers that waited, finding nothing, for shared jobs;
                               members may be stale (see ``qw:idling:<w>``)
``qw:idle:<m>``        set     the same for manager ``<m>``'s queue
``qw:idling:<w>``      string  worker ``<w>`` waits in a take right now: the largest job
                               (bytes) it takes, the length of its list, then the lists
                               it serves in priority order, a line each (a job is
                               handed to it only while nothing was sent to it directly
                               and the lists before the job's are empty), expiring (PX) a few
                               blocking slices later; deleted by its next take, by a job
                               handed to it, and by its recovery
``qw:running:<w>``     hash    job id → when worker ``<w>`` began it (seconds since the
                               epoch), for what it has in hand, written by its manager
                               with each heartbeat and expiring with it (for ``qw job``)
``qw:result:<id>``     hash    what finished job ``<id>`` returned: ``value`` (JSON),
                               ``finished_at`` (server time), ``worker``; expiring (PX)
                               after the worker's result TTL; only for a job whose
                               target returned something other than ``None``
``qw:done:<id>``       list    one token, written with ``qw:result:<id>`` and expiring
                               with it: a producer waiting for the result blocks on it
``qw:handoff:<w>``     list    a job handed to idle worker ``<w>`` by the script that
                               queued it (see ``queue.lua``): the job is on ``<w>:jobs``
                               already, this carries its data to the blocked worker;
                               deleted by its next take, which hands out the job instead
``qw:unique:<key>``    string which job holds unique key ``<key>`` (see
                               :mod:`qw_core.unique`): ``e:<id>`` (held while job
                               ``<id>`` is stored: queued, delayed or held), ``s:<id>``
                               (held while it is stored and not taken: no ``qw:origin``
                               entry) or ``t:<id>`` (held until the key expires, PX);
                               written by the queueing scripts in the step that queues
                               the job, deleted when the job ends
``qw:uniques``         hash    job id → its unique key, for a job holding an ``e`` or
                               ``s`` key: the scripts that end a job (finish, fail, park)
                               delete its key with it; absent while no such job exists,
                               so that finishing costs one ``TYPE`` per call then
``qw:producer:<token>`` string ``number:result`` of the last queueing call of one
                               producer (a broker object in one thread), expiring
                               after 10 minutes: a call re-sent after a lost reply is
                               recognised and changes nothing
``qw:tick:<id>``       hash    the last enqueued tick of schedule ``<id>``: ``tick``
                               (seconds since the epoch), ``manager`` (who enqueued it),
                               ``at`` (server time it was enqueued), ``job`` (its job's
                               id); written with the job by ``tick.lua``, expiring (PX)
                               a week after the last manager declaring it
``qw:declared:<m>``    hash    schedule id → declaration (JSON: cron, zone, queue...)
                               of the schedules manager ``<m>`` runs, rewritten every
                               heartbeat interval and expiring (PX) with a heartbeat TTL
``qw:schedulers``      set     managers that declared schedules: where ``qw schedules``
                               looks (members whose declarations lapsed are dropped)
=====================  ======  ==========================================================

Names: manager and worker names become part of keys, so :func:`check_name` refuses the
ones that would collide with the schema (``all``, ``job``, ``qw``, anything with ``:``)
or make keys unreadable or misleading (whitespace, control characters, invisible and
text-direction characters such as U+200B and U+202E, more than 200 characters).
A worker's name is ``<manager>.<pid>`` (:func:`worker_name`), so a manager's name may not
end in ``.<digits>`` (:func:`qw_core.naming.check_manager_name`).
"""

from __future__ import annotations

from qw_core.namerules import NameRules
from qw_core.results import FINISHED_CAP

# -- the original schema ------------------------------------------------------------------

#: Set of the running managers' names.
ALL_MANAGERS = "all:managers"
#: The shared queue.
ALL_JOBS = "all:jobs"

_QUEUE_SUFFIX = ":jobs"
_WORKERS_SUFFIX = ":workers"
_JOB_PREFIX = "job:"

# -- qw's own keys --------------------------------------------------------------------------

_QW = "qw:"
_WAKE_PREFIX = _QW + "wake:"
#: Wake-up tokens for jobs on the shared queue.
WAKE_ALL = _WAKE_PREFIX + "all"
#: Held job id → origin manager name, ``""`` for the shared queue.
ORIGIN = _QW + "origin"
_DELAYED_PREFIX = _QW + "delayed:"
#: Queue (its origin name) → the due time of its soonest delayed job.
DUE = _QW + "due"
#: Where qw before 1.0 kept every delayed job (id → due time, its queue in ``ORIGIN``):
#: the delayed-job mover moves what is left there into the per-queue sets.
LEGACY_DELAYED = _QW + "delayed"
#: Failed job ids by failure time.
FAILED = _QW + "failed"
_FAILED_PREFIX = FAILED + ":"
_INVALID_PREFIX = _QW + "invalid:"
_JOB_MARKER_PREFIX = _QW + "job:"
_HEARTBEAT_PREFIX = _QW + "hb:"
_NUDGE_PREFIX = _QW + "nudge:"
_IDLE_PREFIX = _QW + "idle:"
_IDLING_PREFIX = _QW + "idling:"
_HANDOFF_PREFIX = _QW + "handoff:"
_RESULT_PREFIX = _QW + "result:"
_RUNNING_PREFIX = _QW + "running:"
_DONE_PREFIX = _QW + "done:"
_PRODUCER_PREFIX = _QW + "producer:"
_TICK_PREFIX = _QW + "tick:"
_DECLARED_PREFIX = _QW + "declared:"
#: The managers that declared schedules.
SCHEDULERS = _QW + "schedulers"
_JOBS_RUN_PREFIX = _QW + "jobs-run:"
_UNIQUE_PREFIX = _QW + "unique:"
#: Job id → its unique key (``e`` and ``s`` modes): what ending a job frees.
UNIQUES = _QW + "uniques"
#: Manager name → the token of its current start: the managers the reaper looks after.
MANAGERS = _QW + "managers"
#: The reaper lease (the token of the manager whose reaper holds it).
REAPER = _QW + "reaper"
#: Job id → how many times it was put back after its worker died holding it.
RECOVERIES = _QW + "recoveries"
#: Jobs put back after a worker died with them and others in hand: the next take of each
#: says so, and its worker runs it alone (see ``Job.suspect``).
SUSPECTS = _QW + "suspects"
#: Jobs finished lately (id → when, the server's clock), so that a job that returned
#: nothing can still be reported as succeeded for a while (see ``finish`` in common.lua).
FINISHED = _QW + "finished"
#: Names jobs were queued to by name (managers' queues, workers' lists): where to look
#: for queues that no running manager or worker owns.
QUEUES = _QW + "queues"
#: Worker name → the manager it registered under last: where a job queued straight onto
#: the worker goes back if it is settled before the worker took it (``home_of`` in
#: common.lua); written by ``register_worker``; deregistering from that manager names another
#: the worker is still registered under, if any, else deletes it (``lua/deregister.lua``).
MANAGER_OF = _QW + "manager-of"

#: Value of an ``ORIGIN`` entry for a job taken from the shared queue.
SHARED_ORIGIN = ""
#: How an origin names a named queue: ``queue:<name>`` (a manager's name has no ``:``).
#: The queue's own keys are the usual ones with this origin in place of a manager's name
#: (``qw:wake:queue:<name>``, ``qw:delayed:queue:<name>``, ``qw:idle:queue:<name>``),
#: except the list itself, ``qw:queue:<name>``: everything of a named queue is under ``qw:``.
NAMED_ORIGIN_PREFIX = "queue:"


def manager_workers(manager: str) -> str:
    """``<m>:workers``: the set of ``manager``'s running workers."""
    return manager + _WORKERS_SUFFIX


def origin(*, manager: str | None = None, queue: str | None = None) -> str:
    """The ``ORIGIN`` value (and the queue reference every key function below takes) of
    manager ``manager``'s queue, named queue ``queue``, or (neither) the shared queue."""
    if queue is not None:
        return NAMED_ORIGIN_PREFIX + queue
    return SHARED_ORIGIN if manager is None else manager


def named_queue(origin: str) -> str | None:
    """The named queue an ``ORIGIN`` value stands for, or ``None`` (a manager, or shared)."""
    return origin[len(NAMED_ORIGIN_PREFIX) :] if origin.startswith(NAMED_ORIGIN_PREFIX) else None


def queue_list(origin: str) -> str:
    """The list of the queue ``origin`` stands for (see :func:`origin`)."""
    if origin == SHARED_ORIGIN:
        return ALL_JOBS
    if origin.startswith(NAMED_ORIGIN_PREFIX):
        return _QW + origin
    return origin + _QUEUE_SUFFIX


def queue(name: str | None) -> str:
    """``<name>:jobs``: a manager's queue or a worker's held list; ``all:jobs`` for ``None``."""
    return ALL_JOBS if name is None else name + _QUEUE_SUFFIX


def delayed(name: str | None) -> str:
    """``qw:delayed:<m>``: the jobs waiting for their due time to go to manager ``<m>``'s
    queue (``qw:delayed:all`` for ``None`` or ``""``, the shared queue; for a named queue
    give its origin, ``qw:delayed:queue:<name>``)."""
    return _DELAYED_PREFIX + (name or "all")


def job(job_id: str) -> str:
    """``job:<id>``: the job's data hash."""
    return _JOB_PREFIX + job_id


def wake(name: str | None) -> str:
    """``qw:wake:<name>`` for a manager's queue or a worker's own list (``qw:wake:all``
    for ``None`` or ``""``, the shared queue; ``qw:wake:queue:<q>`` for a named queue's
    origin): tokens that wake blocked takers."""
    return _WAKE_PREFIX + name if name else WAKE_ALL


def nudge(worker: str) -> str:
    """``qw:nudge:<w>``: a token that ends worker ``<w>``'s wait in a take (one job of its
    own completed meanwhile); expires if nobody waits."""
    return _NUDGE_PREFIX + worker


def idle(name: str | None) -> str:
    """``qw:idle:<m>`` (``qw:idle:all`` for ``None`` or ``""``, the shared queue;
    ``qw:idle:queue:<q>`` for a named queue's origin): workers that wait for a job of
    that queue; a job queued there may be handed to one of them."""
    return _IDLE_PREFIX + (name or "all")


def idling(worker: str) -> str:
    """``qw:idling:<w>``: worker ``<w>`` waits in a take now (see ``queue.lua``)."""
    return _IDLING_PREFIX + worker


def handoff(worker: str) -> str:
    """``qw:handoff:<w>``: the data of a job handed to worker ``<w>`` while it waited."""
    return _HANDOFF_PREFIX + worker


def running(worker: str) -> str:
    """``qw:running:<w>``: what worker ``<w>`` runs now and since when, per its manager's
    last heartbeat."""
    return _RUNNING_PREFIX + worker


def jobs_run(minute: int) -> str:
    """``qw:jobs-run:<minute>``: manager → how many jobs its workers began in the minute
    that starts at ``minute`` (seconds since the epoch, by the server's clock)."""
    return f"{_JOBS_RUN_PREFIX}{minute}"


def result(job_id: str) -> str:
    """``qw:result:<id>``: what finished job ``<id>`` returned, while it is kept."""
    return _RESULT_PREFIX + job_id


def done(job_id: str) -> str:
    """``qw:done:<id>``: a token that wakes whoever waits for job ``<id>``'s result."""
    return _DONE_PREFIX + job_id


def failed_job(job_id: str) -> str:
    """``qw:failed:<id>``: a failed job's record, failure and origin."""
    return _FAILED_PREFIX + job_id


#: The pattern every marker key matches (for a SCAN).
JOB_MARKER_PATTERN = _JOB_MARKER_PREFIX + "*"


def job_marker(job_id: str) -> str:
    """``qw:job:<id>``: qw's own part of a job (encoding, metadata), beside its data hash."""
    return _JOB_MARKER_PREFIX + job_id


def invalid_job(job_id: str) -> str:
    """``qw:invalid:<id>``: the raw hash of a job that failed because it was unreadable."""
    return _INVALID_PREFIX + job_id


def heartbeat(name: str) -> str:
    """``qw:hb:<name>``: the heartbeat of a running manager or worker."""
    return _HEARTBEAT_PREFIX + name


def producer(token: str) -> str:
    """``qw:producer:<token>``: the number and result of a producer's last queueing call."""
    return _PRODUCER_PREFIX + token


def tick(schedule_id: str) -> str:
    """``qw:tick:<id>``: the last enqueued tick of schedule ``<id>``."""
    return _TICK_PREFIX + schedule_id


def declared(manager: str) -> str:
    """``qw:declared:<m>``: the schedules manager ``<m>`` declares."""
    return _DECLARED_PREFIX + manager


def unique(key: str) -> str:
    """``qw:unique:<key>``: which job holds unique key ``<key>``."""
    return _UNIQUE_PREFIX + key


def worker_name(manager: str, pid: int) -> str:
    """A worker's name: ``<manager>.<pid>``, as the original qw named them."""
    return f"{manager}.{pid}"


# -- names ----------------------------------------------------------------------------------

#: Longest manager or worker name accepted.
MAX_NAME_LENGTH = 200

#: The names this key schema accepts (checked by the function every backend shares).
NAME_RULES = NameRules(
    max_length=MAX_NAME_LENGTH,
    forbidden={":": "its Redis keys"},
    reserved=frozenset({"all", "job", "qw"}),
    reserved_by="the key schema",
)


def check_name(name: str) -> str:
    """Return ``name`` if it can be a manager or worker name (:data:`NAME_RULES`).

    :raises InvalidName: with a one-line reason.
    """
    return NAME_RULES.check(name)


# -- one keyspace among several: a prefix before every key ----------------------------------

#: What a :class:`KeySchema` prefixes: every function and constant above that names a key.
_PREFIXED_FUNCTIONS = (
    "manager_workers", "queue_list", "queue", "delayed", "job", "wake", "nudge", "idle",
    "idling", "handoff", "running", "jobs_run", "result", "done", "failed_job", "job_marker",
    "invalid_job", "heartbeat", "producer", "tick", "declared", "unique",
)  # fmt: skip
_PREFIXED_CONSTANTS = (
    "ALL_MANAGERS", "ALL_JOBS", "WAKE_ALL", "ORIGIN", "DUE", "LEGACY_DELAYED", "FAILED",
    "SCHEDULERS", "UNIQUES", "MANAGERS", "REAPER", "RECOVERIES", "SUSPECTS", "FINISHED",
    "QUEUES", "JOB_MARKER_PATTERN", "MANAGER_OF",
)  # fmt: skip


class KeySchema:
    """The key schema above with ``prefix`` before every key: one complete qw keyspace.

    The single-node schema is ``KeySchema("")``, byte for byte the table above. Redis
    Cluster mode (:mod:`qw_redis.cluster`) gives each shard a hash tag as its prefix
    (``{qw0}``, ...), so that every key of a shard hashes to one slot and each Lua script
    touches one slot only. Names and origins (``origin``, ``named_queue``, ``check_name``,
    ``SHARED_ORIGIN``) are not keys and stay module functions.

    Each attribute named like a module-level key function or constant gives that key
    with the prefix (``KeySchema("{qw0}").queue("m")`` is ``{qw0}m:jobs``).
    """

    ALL_MANAGERS: str
    ALL_JOBS: str
    WAKE_ALL: str
    ORIGIN: str
    DUE: str
    LEGACY_DELAYED: str
    FAILED: str
    SCHEDULERS: str
    UNIQUES: str
    MANAGERS: str
    REAPER: str
    RECOVERIES: str
    SUSPECTS: str
    FINISHED: str
    QUEUES: str
    JOB_MARKER_PATTERN: str
    MANAGER_OF: str

    def __init__(self, prefix: str = "") -> None:
        if "'" in prefix or "\\" in prefix or any(c in prefix for c in "*?[]"):
            raise ValueError(
                f"a key prefix may not contain quotes, backslashes or glob characters: {prefix!r}"
            )
        self.prefix = prefix
        for name in _PREFIXED_CONSTANTS:
            setattr(self, name, prefix + globals()[name])
        if not prefix:  # the single-node schema: the module's functions themselves, no wrapper
            for name in _PREFIXED_FUNCTIONS:
                self.__dict__[name] = globals()[name]
        #: The Lua prelude for this keyspace (see :func:`lua_prelude`).
        self.lua_prelude = lua_prelude(prefix)

    def __repr__(self) -> str:
        return f"KeySchema({self.prefix!r})"

    def manager_workers(self, manager: str) -> str:
        return self.prefix + manager_workers(manager)

    def queue_list(self, origin: str) -> str:
        return self.prefix + queue_list(origin)

    def queue(self, name: str | None) -> str:
        return self.prefix + queue(name)

    def delayed(self, name: str | None) -> str:
        return self.prefix + delayed(name)

    def job(self, job_id: str) -> str:
        return self.prefix + job(job_id)

    def wake(self, name: str | None) -> str:
        return self.prefix + wake(name)

    def nudge(self, worker: str) -> str:
        return self.prefix + nudge(worker)

    def idle(self, name: str | None) -> str:
        return self.prefix + idle(name)

    def idling(self, worker: str) -> str:
        return self.prefix + idling(worker)

    def handoff(self, worker: str) -> str:
        return self.prefix + handoff(worker)

    def running(self, worker: str) -> str:
        return self.prefix + running(worker)

    def jobs_run(self, minute: int) -> str:
        return self.prefix + jobs_run(minute)

    def result(self, job_id: str) -> str:
        return self.prefix + result(job_id)

    def done(self, job_id: str) -> str:
        return self.prefix + done(job_id)

    def failed_job(self, job_id: str) -> str:
        return self.prefix + failed_job(job_id)

    def job_marker(self, job_id: str) -> str:
        return self.prefix + job_marker(job_id)

    def invalid_job(self, job_id: str) -> str:
        return self.prefix + invalid_job(job_id)

    def heartbeat(self, name: str) -> str:
        return self.prefix + heartbeat(name)

    def producer(self, token: str) -> str:
        return self.prefix + producer(token)

    def tick(self, schedule_id: str) -> str:
        return self.prefix + tick(schedule_id)

    def declared(self, manager: str) -> str:
        return self.prefix + declared(manager)

    def unique(self, key: str) -> str:
        return self.prefix + unique(key)


# -- the same patterns for Lua ------------------------------------------------------------


def _lua_string(text: str) -> str:
    # The patterns above are plain ASCII without quotes or backslashes; keep it so.
    assert "'" not in text
    assert "\\" not in text
    return f"'{text}'"


def lua_prelude(prefix: str = "") -> str:
    """What is prepended to every script: key builders and constants generated from the
    patterns above, every key with ``prefix`` before it (see :class:`KeySchema`)."""
    p = "" if not prefix else f"{_lua_string(prefix)} .. "  # before a name: the single-node text is unchanged
    return f"""\
-- Generated from qw_redis/keys.py: the key patterns, so they are spelt in one place.
local ALL_JOBS = {_lua_string(prefix + ALL_JOBS)}
local WAKE_ALL = {_lua_string(prefix + WAKE_ALL)}
local SHARED_ORIGIN = {_lua_string(SHARED_ORIGIN)}
local RECOVERIES = {_lua_string(prefix + RECOVERIES)}
local SUSPECTS = {_lua_string(prefix + SUSPECTS)}
local FAILED = {_lua_string(prefix + FAILED)}
local FINISHED = {_lua_string(prefix + FINISHED)}
local FINISHED_CAP = {FINISHED_CAP}  -- from qw_core.results
local DUE = {_lua_string(prefix + DUE)}
local LEGACY_DELAYED = {_lua_string(prefix + LEGACY_DELAYED)}
local ORIGIN = {_lua_string(prefix + ORIGIN)}
local MANAGER_OF = {_lua_string(prefix + MANAGER_OF)}
local UNIQUES = {_lua_string(prefix + UNIQUES)}
local function unique_key(key) return {_lua_string(prefix + _UNIQUE_PREFIX)} .. key end
local function job_key(id) return {_lua_string(prefix + _JOB_PREFIX)} .. id end
local JOB_MARKER_PREFIX = {_lua_string(prefix + _JOB_MARKER_PREFIX)}
local function marker_key(id) return JOB_MARKER_PREFIX .. id end
local function failed_key(id) return {_lua_string(prefix + _FAILED_PREFIX)} .. id end
local function invalid_key(id) return {_lua_string(prefix + _INVALID_PREFIX)} .. id end
local function queue_key(name) return {p}name .. {_lua_string(_QUEUE_SUFFIX)} end
local function workers_key(name) return {p}name .. {_lua_string(_WORKERS_SUFFIX)} end
local function heartbeat_key(name) return {_lua_string(prefix + _HEARTBEAT_PREFIX)} .. name end
local function wake_key(name) return {_lua_string(prefix + _WAKE_PREFIX)} .. name end
local function idling_key(name) return {_lua_string(prefix + _IDLING_PREFIX)} .. name end
local function idle_key(origin)
  return {_lua_string(prefix + _IDLE_PREFIX)} .. (origin == SHARED_ORIGIN and 'all' or origin)
end
local function jobs_run_key(minute) return {_lua_string(prefix + _JOBS_RUN_PREFIX)} .. minute end
local function handoff_key(name) return {_lua_string(prefix + _HANDOFF_PREFIX)} .. name end
local function tick_key(id) return {_lua_string(prefix + _TICK_PREFIX)} .. id end
local function declared_key(name) return {_lua_string(prefix + _DECLARED_PREFIX)} .. name end
local function delayed_key(origin)
  return {_lua_string(prefix + _DELAYED_PREFIX)} .. (origin == SHARED_ORIGIN and 'all' or origin)
end
local NAMED_ORIGIN_PREFIX = {_lua_string(NAMED_ORIGIN_PREFIX)}
local function is_named(origin) return string.sub(origin, 1, #NAMED_ORIGIN_PREFIX) == NAMED_ORIGIN_PREFIX end
-- The list and the wake list of the queue of origin `m` (a manager's name, a named queue
-- as 'queue:<name>', or SHARED_ORIGIN); see keys.py's queue_list().
local function queue_of(m)
  if m == SHARED_ORIGIN then return ALL_JOBS, WAKE_ALL end
  if is_named(m) then return {_lua_string(prefix + _QW)} .. m, wake_key(m) end
  return queue_key(m), wake_key(m)
end
-- The origin of queue list `key` (queue_of's inverse).
local function origin_of_list(key)
  if key == ALL_JOBS then return SHARED_ORIGIN end
  local qw = {_lua_string(prefix + _QW)}
  if string.sub(key, 1, #qw) == qw then return string.sub(key, #qw + 1) end
  return string.sub(key, {len(prefix.encode()) + 1}, #key - #{_lua_string(_QUEUE_SUFFIX)})
end
"""


#: The single-node prelude (no prefix).
LUA_PRELUDE = lua_prelude()
#: The single-node schema as an object (see :class:`KeySchema`).
SINGLE_NODE = KeySchema()
