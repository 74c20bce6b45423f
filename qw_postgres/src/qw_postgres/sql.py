"""The statements of :class:`~qw_postgres.broker.PostgresBroker`, each for one schema.

Kept apart from the broker so that its methods read as what they do; ``{s}`` is the
schema, replaced once per broker (:func:`statements`). The arrays of the hot statements
(queueing, taking, finishing) are sent in binary (``%b``): in text, psycopg checks and
quotes every element, which cost a bulk enqueue more than the statement itself (10,000
jobs: 29,000 -> 60,000-69,000 a second, 19-25 -> 7 us of client CPU a job) and a take with
100 jobs in flight about a fifth of its client CPU. Each statement that makes a job
available ends by calling ``pg_notify`` on its queue's channel, so a waiting worker wakes
when (and only if) the statement's transaction commits.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from qw_postgres import codec

#: The jobs of a queueing statement, one row each (``{only}``: a condition they are queued on).
_JOBS = """input AS (
    SELECT * FROM unnest(
        %(id)b::text[], %(data)b::text[], %(meta)b::text[], %(manager)b::text[], %(worker)b::text[],
        %(queue)b::text[], %(attempts)b::integer[], %(queued_at)b::double precision[],
        %(origin)b::text[], %(holder)b::text[]
    ) WITH ORDINALITY AS i(id, data, meta, manager, worker, queue, attempts, queued_at, origin, holder, ord)
    {only}
)"""

#: Stores the jobs of ``input`` that are not stored already (``ins``: those it stored).
_STORE = """b AS (
    SELECT nextval('{s}.positions') * 1048576 AS base, {s}.now_s() AS now
), ins AS (
    INSERT INTO {s}.jobs (
        id, data, meta, manager, worker, queue, attempts, queued_at, state, origin, position, holder, due
    )
    SELECT i.id, i.data::json, i.meta::json, i.manager, i.worker, i.queue, i.attempts, i.queued_at,
        CASE WHEN i.holder IS NOT NULL THEN 'held' WHEN %(delayed)s::boolean THEN 'delayed' ELSE 'queued' END,
        i.origin, b.base + i.ord, i.holder,
        CASE WHEN i.holder IS NULL AND %(delayed)s::boolean
            THEN coalesce(%(at)s::double precision, b.now + %(delay)s::double precision) END
    FROM input i CROSS JOIN b ORDER BY i.ord
    ON CONFLICT (id) DO NOTHING
    RETURNING origin, holder
), named AS (
    INSERT INTO {s}.queues (name) SELECT DISTINCT i.queue FROM input i WHERE i.queue IS NOT NULL
    ON CONFLICT DO NOTHING
)"""

#: Wakes the queues of the jobs ``ins`` stored.
_WAKE = """SELECT pg_notify({s}.channel(k.key), '')
FROM (SELECT DISTINCT coalesce('w:' || ins.holder, ins.origin) AS key FROM ins) k"""

QUEUE = f"""
WITH {_JOBS.format(only="")}, {_STORE}
{_WAKE}
"""

#: :data:`QUEUE` for jobs some of which have a unique key: ``<schema>.claim_uniques()``
#: takes the keys first (one per key: the caller sends each key once), and a job whose
#: key another job holds is not stored; one statement, so a job and its key are written
#: together or not at all. Returns how many queues were woken, and the ids of the jobs not
#: stored with the ids of the jobs that hold their keys.
QUEUE_UNIQUE = f"""
WITH c AS (
    SELECT * FROM {{s}}.claim_uniques(
        %(keys)s::text[], %(key_jobs)s::text[], %(modes)s::text[], %(ttls)s::double precision[]
    )
), {_JOBS.format(only="WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.c_job = i.id AND c.c_holder IS NOT NULL)")},
{_STORE}, woken AS (
    {_WAKE}
)
SELECT (SELECT count(*) FROM woken), (SELECT array_agg(c.c_job) FROM c WHERE c.c_holder IS NOT NULL),
    (SELECT array_agg(c.c_holder) FROM c WHERE c.c_holder IS NOT NULL)
"""

#: One tick of a schedule (``<schema>.record_tick()``) and, if it was recorded, its job,
#: stored and woken as :data:`QUEUE` does: one statement, so both or neither are written.
#: Returns the tick function's row (whether it enqueued, and the last tick).
TICK = f"""
WITH t AS (
    SELECT * FROM {{s}}.record_tick(
        %(schedule)s, %(tick)s::double precision, %(by)s, %(job)s, %(keep)s::double precision
    )
), {_JOBS.format(only="WHERE (SELECT t.k_enqueued FROM t)")}, {_STORE}, woken AS (
    {_WAKE}
)
SELECT t.*, (SELECT count(*) FROM woken) FROM t
"""

#: The tick alone, without its job (a unique tick's job is queued apart, in one transaction).
RECORD_TICK = """
SELECT * FROM {s}.record_tick(
    %(schedule)s, %(tick)s::double precision, %(by)s, %(job)s, %(keep)s::double precision
)
"""

#: The job a unique tick recorded is the holder of its key (its own was not queued).
TICK_HOLDER = "UPDATE {s}.ticks SET job_id = %(job)s WHERE schedule_id = %(schedule)s"

#: A manager's declarations replace its last ones; the last ticks of the schedules it
#: declares are read, and kept for ``keep`` seconds more when less than ``refresh`` remain
#: (so the rows are not rewritten on every declaration), locked in id order.
DECLARE = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::text[], %(texts)s::text[]) AS i(schedule_id, declaration)
), b AS (
    SELECT {s}.now_s() AS now
), gone AS (
    DELETE FROM {s}.declarations d WHERE d.manager = %(manager)s AND d.schedule_id <> ALL (%(ids)s::text[])
), put AS (
    INSERT INTO {s}.declarations AS d (manager, schedule_id, declaration, expires)
    SELECT %(manager)s, i.schedule_id, i.declaration, b.now + %(ttl)s::double precision
    FROM input i CROSS JOIN b
    ON CONFLICT (manager, schedule_id) DO UPDATE SET declaration = excluded.declaration,
        expires = excluded.expires
), found AS (
    SELECT k.schedule_id, k.tick, k.manager, k.at, k.job_id, k.expires FROM {s}.ticks k CROSS JOIN b
    WHERE k.schedule_id = ANY (%(ids)s::text[]) AND k.expires > b.now
), kept AS (
    UPDATE {s}.ticks k SET expires = b.now + %(keep)s::double precision
    FROM (
        SELECT x.schedule_id FROM {s}.ticks x CROSS JOIN b
        WHERE x.schedule_id IN (SELECT f.schedule_id FROM found f
            WHERE f.expires < b.now + %(refresh)s::double precision)
        ORDER BY x.schedule_id FOR UPDATE OF x
    ) r, b
    WHERE k.schedule_id = r.schedule_id AND k.expires > b.now
    RETURNING k.schedule_id
)
SELECT f.schedule_id, f.tick, f.manager, f.at, f.job_id, (SELECT count(*) FROM kept) FROM found f
"""

DECLARED = """
SELECT manager, schedule_id, declaration FROM {s}.declarations
WHERE expires > {s}.now_s() ORDER BY manager, schedule_id
"""

TICKS = """
SELECT schedule_id, tick, manager, at, job_id FROM {s}.ticks
WHERE schedule_id = ANY (%s::text[]) AND expires > {s}.now_s()
"""

NOW = "SELECT {s}.now_s()"

TAKE = "SELECT * FROM {s}.take(%s, %s, %b, %b, %b, %s, %s, %s)"

FINISH = "SELECT * FROM {s}.finish(%(ids)b::text[], %(worker)s, %(keep)s::double precision)"

NOTE_JOBS_RUN = """
WITH old AS (
    DELETE FROM {s}.jobs_run WHERE minute < floor({s}.now_s() / 60) * 60 - %(keep)s
)
INSERT INTO {s}.jobs_run AS r (minute, manager, count)
VALUES (floor({s}.now_s() / 60)::bigint * 60, %(manager)s, %(count)s)
ON CONFLICT (minute, manager) DO UPDATE SET count = r.count + excluded.count
"""

JOBS_RUN = """
SELECT floor({s}.now_s() / 60)::bigint * 60 AS now, r.minute, r.manager, r.count
FROM (SELECT 1) one LEFT JOIN {s}.jobs_run r ON r.minute > floor({s}.now_s() / 60)::bigint * 60 - %(span)s
"""

FINISHED_AT = "SELECT finished_at FROM {s}.finished WHERE id = %s AND expires > {s}.now_s()"

FINISH_RESULT = """
WITH f AS (
    DELETE FROM {s}.jobs WHERE id = %(id)s AND state = 'held' AND holder = %(worker)s RETURNING id
), r AS (
    INSERT INTO {s}.results (id, value, finished_at, worker, expires)
    SELECT f.id, %(value)s::json, {s}.now_s(), %(worker)s, {s}.now_s() + %(ttl)s::double precision FROM f
    ON CONFLICT (id) DO UPDATE SET value = excluded.value, finished_at = excluded.finished_at,
        worker = excluded.worker, expires = excluded.expires
    RETURNING id
)
SELECT r.id, pg_notify({s}.channel('r:' || r.id), '') FROM r
"""

RESULT = """
SELECT value::text, finished_at, worker FROM {s}.results WHERE id = %s AND expires > {s}.now_s()
"""

#: Where a settle call (fail, retry, release) puts back a job that waited on a worker's
#: list (origin ``w``) and was never taken: the queue of the manager the worker registered
#: under (in ``workers``; the first by name if it registered under several), else
#: ``%(fallback)s``, the queue its name says (see ``qw_postgres.base._manager_of``). A
#: subquery of the ``CASE``, so a statement runs it only for such a job, once.
_HOME = """coalesce(
    (SELECT 'm:' || w.manager FROM {s}.workers w WHERE w.name = %(holder)s ORDER BY w.manager LIMIT 1),
    %(fallback)s
)"""

FAIL = f"""
WITH input AS (
    SELECT * FROM unnest(
        %(id)s::text[], %(data)s::text[], %(meta)s::text[], %(manager)s::text[], %(worker)s::text[],
        %(queue)s::text[], %(attempts)s::integer[], %(queued_at)s::double precision[], %(failure)s::text[]
    ) WITH ORDINALITY AS i(id, data, meta, manager, worker, queue, attempts, queued_at, failure, ord)
), gone AS (
    DELETE FROM {{s}}.jobs j USING input i
    WHERE j.id = i.id AND j.state = 'held' AND j.holder = %(holder)s
    RETURNING j.id, j.origin
), b AS (
    SELECT nextval('{{s}}.positions') * 1048576 AS base, {{s}}.now_s() AS now
)
INSERT INTO {{s}}.failed AS f (
    id, data, meta, manager, worker, queue, attempts, queued_at, origin, failure, failed_at, position
)
SELECT i.id, i.data::json, i.meta::json, i.manager, i.worker, i.queue, i.attempts, i.queued_at,
    CASE WHEN g.origin = 'w' THEN {_HOME} ELSE g.origin END, i.failure::json, b.now, b.base + i.ord
FROM input i JOIN gone g ON g.id = i.id CROSS JOIN b
ON CONFLICT (id) DO UPDATE SET data = excluded.data, meta = excluded.meta, manager = excluded.manager,
    worker = excluded.worker, queue = excluded.queue, attempts = excluded.attempts,
    queued_at = excluded.queued_at, origin = excluded.origin, failure = excluded.failure,
    failed_at = excluded.failed_at, position = excluded.position
RETURNING f.id
"""

#: Moves held jobs (a dead worker's poison jobs, a job taken unreadable) to the failed
#: registry as they are stored, with one more attempt; an origin of NULL keeps the job's own.
FAIL_HELD = """
WITH input AS (
    SELECT * FROM unnest(%(id)s::text[], %(origin)s::text[], %(failure)s::text[])
        WITH ORDINALITY AS i(id, origin, failure, ord)
), gone AS (
    DELETE FROM {s}.jobs j USING input i WHERE j.id = i.id AND j.state = 'held' AND j.holder = %(holder)s
    RETURNING j.*
), b AS (
    SELECT nextval('{s}.positions') * 1048576 AS base, {s}.now_s() AS now
)
INSERT INTO {s}.failed AS f (
    id, data, meta, manager, worker, queue, attempts, queued_at, origin, failure, failed_at, position
)
SELECT g.id, g.data, g.meta, g.manager, g.worker, g.queue, g.attempts + 1, g.queued_at,
    coalesce(i.origin, g.origin), i.failure::json, b.now, b.base + i.ord
FROM input i JOIN gone g ON g.id = i.id CROSS JOIN b
ON CONFLICT (id) DO UPDATE SET data = excluded.data, meta = excluded.meta, manager = excluded.manager,
    worker = excluded.worker, queue = excluded.queue, attempts = excluded.attempts,
    queued_at = excluded.queued_at, origin = excluded.origin, failure = excluded.failure,
    failed_at = excluded.failed_at, position = excluded.position
RETURNING f.id
"""

#: Deletes at most 100 failed jobs past the age bound and 100 past the count bound.
TRIM_FAILED = """
DELETE FROM {s}.failed WHERE id IN (
    (SELECT id FROM {s}.failed
     WHERE %(max_age)s::double precision IS NOT NULL
         AND failed_at < {s}.now_s() - %(max_age)s::double precision
     ORDER BY failed_at LIMIT 100)
    UNION
    (SELECT id FROM {s}.failed WHERE %(max_count)s::bigint IS NOT NULL
     ORDER BY position DESC OFFSET coalesce(%(max_count)s::bigint, 0) LIMIT 100)
)
"""

RETRY = f"""
WITH u AS (
    UPDATE {{s}}.jobs SET data = %(data)s::json, meta = %(meta)s::json, manager = %(manager)s,
        worker = %(worker)s, queue = %(queue)s, attempts = %(attempts)s, queued_at = %(queued_at)s,
        state = CASE WHEN %(delay)s::double precision > 0 THEN 'delayed' ELSE 'queued' END,
        holder = NULL, suspect = false,
        origin = CASE WHEN origin = 'w' THEN {_HOME} ELSE origin END,
        due = CASE WHEN %(delay)s::double precision > 0 THEN {{s}}.now_s() + %(delay)s::double precision END,
        position = nextval('{{s}}.positions') * 1048576 + 1
    WHERE id = %(id)s AND state = 'held' AND holder = %(holder)s
    RETURNING origin
)
SELECT pg_notify({{s}}.channel(u.origin), '') FROM u
"""

RELEASE = f"""
WITH c AS (
    SELECT id, origin FROM {{s}}.jobs
    WHERE id = ANY (%(ids)s::text[]) AND state = 'held' AND holder = %(holder)s FOR UPDATE
), r AS (
    SELECT c.id, c.origin, row_number() OVER (ORDER BY array_position(%(ids)s::text[], c.id::text)) AS rn
    FROM c
), b AS (
    SELECT nextval('{{s}}.positions') * 1048576 AS base
), u AS (
    UPDATE {{s}}.jobs j SET state = 'queued', holder = NULL, position = -b.base + r.rn,
        origin = CASE WHEN r.origin = 'w' THEN {_HOME} ELSE r.origin END
    FROM r CROSS JOIN b WHERE j.id = r.id
    RETURNING j.origin
), woken AS (
    SELECT pg_notify({{s}}.channel(d.o), '') FROM (SELECT DISTINCT origin AS o FROM u) d
)
SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM woken)
"""

HELD_FOR_RECOVERY = """
SELECT id, origin, recoveries FROM {s}.jobs WHERE state = 'held' AND holder = %s ORDER BY position FOR UPDATE
"""

PUT_BACK = """
UPDATE {s}.jobs j SET state = 'queued', holder = NULL, origin = u.origin, position = u.position,
    recoveries = u.recoveries, suspect = j.suspect OR u.suspect
FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::integer[], %s::boolean[])
    AS u(id, origin, position, recoveries, suspect)
WHERE j.id = u.id AND j.state = 'held' AND j.holder = %s
"""

NOTIFY = "SELECT pg_notify({s}.channel(k), '') FROM unnest(%s::text[]) AS k"

NEXT_POSITION = "SELECT nextval('{s}.positions') * 1048576"

#: A nudge (see :meth:`PostgresBroker.nudge`) commits without waiting for its WAL flush:
#: a nudge a crash loses only lets one wait run to its timeout.
NUDGE = """
WITH n AS (
    INSERT INTO {s}.nudges (worker, at) VALUES (%(worker)s, {s}.now_s())
    ON CONFLICT (worker) DO UPDATE SET at = excluded.at RETURNING worker
)
SELECT pg_notify({s}.channel('w:' || n.worker), ''), set_config('synchronous_commit', 'off', true) FROM n
"""

BEAT = "SELECT * FROM {s}.beat(%s, %s, %s, %s)"

#: Requeues failed jobs by id. A job with a unique key (``meta["unique"]``) takes it again
#: (``claim_uniques()``), and stays in the registry while another job holds it; of the
#: jobs of one call with one key, only the oldest failure is tried.
REQUEUE_FAILED = """
WITH picked AS (
    SELECT f.*, row_number() OVER (ORDER BY f.position) AS rn,
        CASE WHEN json_typeof(f.meta -> 'unique') = 'object' THEN f.meta -> 'unique' ->> 'key' END AS ukey
    FROM {s}.failed f WHERE f.id = ANY (%(ids)s::text[])
), firsts AS (
    SELECT DISTINCT ON (p.ukey) p.id, p.ukey,
        CASE WHEN json_typeof(p.meta -> 'unique' -> 'ttl') = 'number' THEN 'ttl'
            WHEN p.meta -> 'unique' ->> 'until' = 'start' THEN 'start' ELSE 'end' END AS mode,
        CASE WHEN json_typeof(p.meta -> 'unique' -> 'ttl') = 'number'
            THEN (p.meta -> 'unique' ->> 'ttl')::double precision END AS ttl
    FROM picked p WHERE p.ukey IS NOT NULL ORDER BY p.ukey, p.position
), c AS (
    SELECT x.* FROM (
        SELECT array_agg(ukey) AS k, array_agg(id) AS j, array_agg(mode) AS m, array_agg(ttl) AS t
        FROM firsts
    ) a CROSS JOIN LATERAL {s}.claim_uniques(a.k, a.j, a.m, a.t) x
    WHERE a.k IS NOT NULL
), b AS (
    SELECT nextval('{s}.positions') * 1048576 AS base
), ins AS (
    INSERT INTO {s}.jobs (
        id, data, meta, manager, worker, queue, attempts, queued_at, state, origin, position
    )
    SELECT p.id, p.data, p.meta, p.manager, p.worker, p.queue, 0, p.queued_at, 'queued', p.origin,
        b.base + p.rn
    FROM picked p CROSS JOIN b
    WHERE p.ukey IS NULL OR EXISTS (SELECT 1 FROM c WHERE c.c_job = p.id AND c.c_holder IS NULL)
    ORDER BY p.rn
    ON CONFLICT (id) DO NOTHING
    RETURNING id, origin
), del AS (
    DELETE FROM {s}.failed f USING ins WHERE f.id = ins.id RETURNING f.id
), woken AS (
    SELECT pg_notify({s}.channel(o), '') FROM (SELECT DISTINCT origin AS o FROM ins) d
)
SELECT del.id, (SELECT count(*) FROM woken) FROM del
"""

STATUS = """
SELECT 'failed', id, data::text, meta::text, manager, worker, queue, attempts, queued_at,
    failure::text, failed_at, NULL::text, NULL::text, NULL::double precision, NULL::double precision
FROM {s}.failed WHERE id = %(id)s
UNION ALL
SELECT state, id, data::text, meta::text, manager, worker, queue, attempts, queued_at,
    NULL, NULL, holder, origin, due, (
        SELECT (r.jobs ->> %(id)s)::double precision FROM {s}.running r
        WHERE r.worker = j.holder AND r.expires > {s}.now_s()
    )
FROM {s}.jobs j WHERE id = %(id)s
"""


def queue_params(
    rows: Sequence[tuple[codec.Row, str, str | None]], *, waits: bool, delay: float, at: float | None
) -> dict[str, Any]:
    """The parameters of :data:`QUEUE` (and of :data:`TICK`'s job) for encoded jobs
    (row, origin, worker)."""
    return {
        **codec.columns([row for row, _, _ in rows]),
        "origin": [origin for _, origin, _ in rows],
        "holder": [worker for _, _, worker in rows],
        "delayed": waits,
        "at": at if waits else None,
        "delay": delay,
    }


@functools.lru_cache(maxsize=64)
def statements(schema: str) -> dict[str, str]:
    """Every statement above, for ``schema``."""
    return {
        name: text.replace("{s}", schema)
        for name, text in globals().items()
        if name.isupper() and isinstance(text, str)
    }
