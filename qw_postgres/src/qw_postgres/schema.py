"""The tables and functions qw keeps in PostgreSQL, as numbered migrations.

Every object lives in one schema the user names (``?schema=NAME`` in the URL, ``qw`` by
default), so that several applications, or the tests, share a database without meeting.
The schema records which migrations it has in ``<schema>.qw_migrations``. A broker that
opens a database whose schema is older applies the missing migrations itself, in one
transaction under ``pg_advisory_xact_lock``, so managers that start at once apply each
migration exactly once and none of them sees a half-made schema; one whose schema is
newer than this code refuses to run (:class:`SchemaTooNew`) rather than guess.
``qw migrate`` applies them, or prints them for teams that run migrations by hand.

Positions. A queue's order is the ``position`` of its rows (smallest first). Each
statement that places rows draws one number from ``<schema>.positions`` and gives its rows
``number * 2**20 + 1, 2, 3...`` in order (the back of every queue); rows put back at the
front get ``-number * 2**20 + 1, 2, 3...``, smaller than every position drawn before. So a
batch keeps its order without a sequence call per row, and the front stays the front.

Waking. A statement that makes a job available calls ``pg_notify`` on the channel of its
queue (``<schema>.channel(key)``: ``qw_`` and the MD5 of the schema and the queue's key,
since a channel name has at most 63 bytes and a queue name up to 200 characters). A
notification is sent when its transaction commits, so a job queued in a transaction that
rolls back wakes nobody, and one that commits is visible to the worker it wakes.
"""

from __future__ import annotations

import hashlib
import re

import attrs

from qw_core.errors import ConfigurationError
from qw_core.results import FINISHED_CAP

#: The schema's name when the URL does not name one.
DEFAULT_SCHEMA = "qw"

#: What a schema name may be: a lower-case SQL identifier that needs no quoting.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: Positions a statement may give its rows (see the module's docstring).
BLOCK = 1 << 20

#: The advisory lock class of migrations (the lock's second half is the schema's hash).
MIGRATION_LOCK = 0x7177


def check_schema(name: str) -> str:
    """Return ``name`` if it can name qw's schema.

    :raises ConfigurationError: it is not a lower-case identifier of at most 63 characters.
    """
    if not _SCHEMA_NAME.fullmatch(name) or name.startswith("pg_"):
        raise ConfigurationError(
            f"schema name {name[:80]!r} is not a lower-case SQL identifier (letters, digits and _, "
            "at most 63 characters, not starting with a digit or pg_)"
        )
    return name


def channel(schema: str, key: str) -> str:
    """The ``LISTEN`` channel of queue ``key`` in ``schema`` (as ``<schema>.channel`` computes it)."""
    return "qw_" + hashlib.md5(f"{schema}:{key}".encode(), usedforsecurity=False).hexdigest()


@attrs.frozen
class Migration:
    """One step of the schema: its number, what it does, and its SQL (``{s}``: the schema)."""

    version: int
    description: str
    sql: str

    def text(self, schema: str) -> str:
        """The SQL for ``schema``."""
        return (
            self.sql.replace("{s}", schema)
            .replace("{schema}", schema)
            .replace("{finished_cap}", str(FINISHED_CAP))
        )


_V1 = r"""
CREATE SEQUENCE {s}.positions;

CREATE FUNCTION {s}.now_s() RETURNS double precision LANGUAGE sql VOLATILE AS
$$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;

CREATE FUNCTION {s}.channel(p_key text) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT 'qw_' || md5('{schema}:' || p_key) $$;

-- Queued, delayed and held jobs. origin: where the job waits or goes back to ('default',
-- 'q:<queue>', 'm:<manager>'; 'w' for a job sent to a worker that has not taken it yet,
-- which goes to that worker's manager). holder: the worker holding it (state 'held').
CREATE TABLE {s}.jobs (
    id text COLLATE "C" PRIMARY KEY,
    data json NOT NULL,
    meta json NOT NULL DEFAULT '{}',
    manager text COLLATE "C",
    worker text COLLATE "C",
    queue text COLLATE "C",
    attempts integer NOT NULL DEFAULT 0,
    queued_at double precision,
    state text NOT NULL CHECK (state IN ('queued', 'delayed', 'held')),
    origin text COLLATE "C" NOT NULL,
    position bigint NOT NULL,
    holder text COLLATE "C",
    due double precision,
    recoveries integer NOT NULL DEFAULT 0,
    suspect boolean NOT NULL DEFAULT false,
    CHECK ((state = 'held') = (holder IS NOT NULL)),
    CHECK ((state = 'delayed') = (due IS NOT NULL))
);
CREATE INDEX jobs_queued ON {s}.jobs (origin, position) WHERE state = 'queued';
CREATE INDEX jobs_held ON {s}.jobs (holder, position) WHERE state = 'held';
CREATE INDEX jobs_delayed ON {s}.jobs (origin, due, position) WHERE state = 'delayed';
CREATE INDEX jobs_due ON {s}.jobs (due) WHERE state = 'delayed';

-- The failed-job registry: the job as it last ran, why it failed, and where it goes back to.
CREATE TABLE {s}.failed (
    id text COLLATE "C" PRIMARY KEY,
    data json NOT NULL,
    meta json NOT NULL DEFAULT '{}',
    manager text COLLATE "C",
    worker text COLLATE "C",
    queue text COLLATE "C",
    attempts integer NOT NULL DEFAULT 0,
    queued_at double precision,
    origin text COLLATE "C" NOT NULL,
    failure json NOT NULL,
    failed_at double precision NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX failed_position ON {s}.failed (position);
CREATE INDEX failed_at ON {s}.failed (failed_at);

CREATE TABLE {s}.results (
    id text COLLATE "C" PRIMARY KEY,
    value json NOT NULL,
    finished_at double precision NOT NULL,
    worker text COLLATE "C" NOT NULL,
    expires double precision NOT NULL
);
CREATE INDEX results_expires ON {s}.results (expires);

-- Jobs that finished lately without a result, so that their status says they succeeded
-- (for the worker's result_ttl, the newest FINISHED_CAP of them at most; seq orders them).
CREATE TABLE {s}.finished (
    id text COLLATE "C" PRIMARY KEY,
    finished_at double precision NOT NULL,
    expires double precision NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX finished_expires ON {s}.finished (expires);
CREATE INDEX finished_seq ON {s}.finished (seq);

-- Membership and liveness; times are the database's clock (now_s()).
CREATE TABLE {s}.managers (name text COLLATE "C" PRIMARY KEY, beats boolean NOT NULL DEFAULT false);
CREATE TABLE {s}.workers (
    manager text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    PRIMARY KEY (manager, name)
);
CREATE INDEX workers_name ON {s}.workers (name);
CREATE TABLE {s}.heartbeats (
    name text COLLATE "C" PRIMARY KEY,
    token text NOT NULL,
    expires double precision NOT NULL
);
CREATE TABLE {s}.running (
    worker text COLLATE "C" PRIMARY KEY,
    jobs json NOT NULL,
    expires double precision NOT NULL
);
CREATE TABLE {s}.leases (
    name text COLLATE "C" PRIMARY KEY,
    owner text NOT NULL,
    expires double precision NOT NULL
);
CREATE TABLE {s}.nudges (worker text COLLATE "C" PRIMARY KEY, at double precision NOT NULL);
CREATE TABLE {s}.queues (name text COLLATE "C" PRIMARY KEY);

-- Jobs each manager's workers began, per minute of the database's clock (Broker.jobs_run).
CREATE TABLE {s}.jobs_run (
    minute bigint NOT NULL,
    manager text COLLATE "C" NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (minute, manager)
);

-- Periodic jobs. ticks: each schedule's last enqueued tick (who enqueued it, when, its
-- job), kept until expires (a week past the last declaration of the schedule).
-- declarations: what each manager runs, until expires (a heartbeat TTL). Database clock.
CREATE TABLE {s}.ticks (
    schedule_id text COLLATE "C" PRIMARY KEY,
    tick double precision NOT NULL,
    manager text COLLATE "C" NOT NULL,
    at double precision NOT NULL,
    job_id text COLLATE "C" NOT NULL,
    expires double precision NOT NULL
);
CREATE INDEX ticks_expires ON {s}.ticks (expires);
CREATE TABLE {s}.declarations (
    manager text COLLATE "C" NOT NULL,
    schedule_id text COLLATE "C" NOT NULL,
    declaration text NOT NULL,
    expires double precision NOT NULL,
    PRIMARY KEY (manager, schedule_id)
);
CREATE INDEX declarations_expires ON {s}.declarations (expires);

-- Unique keys (see qw_core/unique.py): which job holds each key, and how ('end': while the
-- job is a row of jobs; 'start': while it is queued or delayed, or sent to a worker that
-- has not taken it; 'ttl': until expires, on the database's clock). Whether a key is held
-- is judged from its job's row, so a job that vanished never holds one and ending a job
-- touches nothing here; rows whose job is gone are deleted by sweep_uniques().
CREATE TABLE {s}.uniques (
    key text COLLATE "C" PRIMARY KEY,
    job_id text COLLATE "C" NOT NULL,
    mode text NOT NULL CHECK (mode IN ('end', 'start', 'ttl')),
    expires double precision,
    CHECK ((mode = 'ttl') = (expires IS NOT NULL))
);

-- Record tick p_tick of schedule p_id if it is newer than the last one (or the last one
-- expired), and say whether it did, with the schedule's last tick after the call. The
-- upsert locks the schedule's row, so concurrent callers are serialised on it: a caller
-- that waited on another's first insert of the row, or on its update, sees the tick it
-- committed and writes nothing. The read of a tick not recorded is a statement of its
-- own, so it sees (in READ COMMITTED) the row the upsert waited for.
CREATE FUNCTION {s}.record_tick(
    p_id text, p_tick double precision, p_manager text, p_job text, p_keep double precision
) RETURNS TABLE (
    k_enqueued boolean, k_tick double precision, k_manager text, k_at double precision, k_job text
) LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := {s}.now_s();
BEGIN
    LOOP  -- again only if the row it met was deleted (expired) before it could be read
        INSERT INTO {s}.ticks AS k (schedule_id, tick, manager, at, job_id, expires)
        VALUES (p_id, p_tick, p_manager, v_now, p_job, v_now + p_keep)
        ON CONFLICT (schedule_id) DO UPDATE SET tick = excluded.tick, manager = excluded.manager,
            at = excluded.at, job_id = excluded.job_id, expires = excluded.expires
        WHERE k.tick < excluded.tick OR k.expires <= v_now
        RETURNING true, k.tick, k.manager, k.at, k.job_id
        INTO k_enqueued, k_tick, k_manager, k_at, k_job;
        IF NOT FOUND THEN
            SELECT false, k.tick, k.manager, k.at, k.job_id
            INTO k_enqueued, k_tick, k_manager, k_at, k_job
            FROM {s}.ticks k WHERE k.schedule_id = p_id;
        END IF;
        IF FOUND THEN
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;
END
$$;

-- Whether the job p_job still holds a key it took in mode p_mode (expiring at p_expires).
-- Called as a statement of its own by the functions below, after they locked the key's
-- row: in READ COMMITTED it then sees every job committed by whoever wrote that row.
CREATE FUNCTION {s}.unique_held(p_job text, p_mode text, p_expires double precision)
RETURNS boolean LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN p_mode = 'ttl' THEN p_expires > {s}.now_s()
        ELSE EXISTS (SELECT 1 FROM {s}.jobs j WHERE j.id = p_job
            AND (p_mode = 'end' OR j.state <> 'held' OR j.origin = 'w')) END
$$;

-- Job p_jobs[i] takes unique key p_keys[i] (mode p_modes[i], p_ttls[i] seconds for 'ttl')
-- unless another job holds it; one row per key: c_holder is NULL if the job holds the key
-- now (it took it, held it already, or its id is stored already: a call sent again, whose
-- job is left as it is), else the id of the job that holds it. The keys are distinct, and
-- locked in their order (two callers never wait on each other in a cycle). A key's row is
-- inserted, or locked and then judged by a statement of its own, so a caller that waited
-- for another's insert or update of the row (an open transaction: until it ends) sees the
-- job that transaction stored with it; a rollback takes the row back, and the key is free.
CREATE FUNCTION {s}.claim_uniques(p_keys text[], p_jobs text[], p_modes text[], p_ttls double precision[])
RETURNS TABLE (c_job text, c_holder text) LANGUAGE plpgsql AS $$
DECLARE
    v_i integer;
    v_lock record;
    v_held boolean;
    v_expires double precision;
BEGIN
    FOR v_i IN SELECT u.n FROM unnest(p_keys) WITH ORDINALITY AS u(k, n) ORDER BY u.k COLLATE "C" LOOP
        c_job := p_jobs[v_i];
        c_holder := NULL;
        IF NOT EXISTS (SELECT 1 FROM {s}.jobs j WHERE j.id = c_job) THEN
            LOOP  -- again only if the row it met was deleted (swept) before it could be locked
                v_expires := CASE WHEN p_modes[v_i] = 'ttl' THEN {s}.now_s() + p_ttls[v_i] END;
                INSERT INTO {s}.uniques (key, job_id, mode, expires)
                VALUES (p_keys[v_i], c_job, p_modes[v_i], v_expires)
                ON CONFLICT (key) DO NOTHING;
                EXIT WHEN FOUND;
                SELECT u.job_id, u.mode, u.expires INTO v_lock FROM {s}.uniques u
                WHERE u.key = p_keys[v_i] FOR UPDATE;
                IF FOUND THEN
                    SELECT {s}.unique_held(v_lock.job_id, v_lock.mode, v_lock.expires) INTO v_held;
                    IF v_held AND v_lock.job_id <> c_job THEN
                        c_holder := v_lock.job_id;
                    ELSE
                        UPDATE {s}.uniques u SET job_id = c_job, mode = p_modes[v_i],
                            expires = CASE WHEN p_modes[v_i] = 'ttl' THEN {s}.now_s() + p_ttls[v_i] END
                        WHERE u.key = p_keys[v_i];
                    END IF;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Delete the rows of keys no job holds any more (its job is gone, or its TTL passed) among
-- the p_limit keys after p_after; the last key looked at, NULL once past the end. Rows a
-- claim holds are skipped, and the others are judged again once locked, by a statement of
-- their own (so a key taken since the first look is kept).
CREATE FUNCTION {s}.sweep_uniques(p_after text, p_limit integer) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_keys text[];
    v_count integer;
    v_last text;
BEGIN
    SELECT array_agg(x.key), count(*), max(x.key) INTO v_keys, v_count, v_last FROM (
        SELECT u.key FROM {s}.uniques u WHERE u.key > p_after ORDER BY u.key LIMIT p_limit
    ) x;
    SELECT array_agg(x.key) INTO v_keys FROM (
        SELECT u.key FROM {s}.uniques u
        WHERE u.key = ANY (v_keys) AND NOT {s}.unique_held(u.job_id, u.mode, u.expires)
        ORDER BY u.key FOR UPDATE SKIP LOCKED
    ) x;
    IF v_keys IS NOT NULL THEN
        DELETE FROM {s}.uniques u
        WHERE u.key = ANY (v_keys) AND NOT {s}.unique_held(u.job_id, u.mode, u.expires);
    END IF;
    RETURN CASE WHEN v_count < p_limit THEN NULL ELSE v_last END;
END
$$;

-- Move due delayed jobs to the back of their queues, the soonest due first (at most
-- 1,000 a call; rows another mover holds are left to it).
CREATE FUNCTION {s}.promote() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {s}.jobs d WHERE d.state = 'delayed' AND d.due <= {s}.now_s()) THEN
        RETURN 0;
    END IF;
    WITH c AS (
        SELECT d.id, d.due, d.position FROM {s}.jobs d
        WHERE d.state = 'delayed' AND d.due <= {s}.now_s()
        ORDER BY d.due, d.position LIMIT 1000 FOR UPDATE SKIP LOCKED
    ), r AS (
        SELECT c.id, row_number() OVER (ORDER BY c.due, c.position) AS rn FROM c
    ), b AS (
        SELECT nextval('{s}.positions') * 1048576 AS base
    )
    UPDATE {s}.jobs j SET state = 'queued', due = NULL, position = b.base + r.rn
    FROM r, b WHERE j.id = r.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Finish p_ids (those p_worker holds: returned), noting them as finished for p_keep
-- seconds (0: not at all). Expired notes, and all but the newest FINISHED_CAP, are
-- deleted on about one call in 16, so a job pays one insert.
CREATE FUNCTION {s}.finish(p_ids text[], p_worker text, p_keep double precision)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    v_done text[];
BEGIN
    WITH gone AS (
        DELETE FROM {s}.jobs j WHERE j.id = ANY (p_ids) AND j.state = 'held' AND j.holder = p_worker
        RETURNING j.id
    )
    SELECT array_agg(gone.id) INTO v_done FROM gone;
    IF v_done IS NULL THEN
        RETURN;
    END IF;
    IF p_keep > 0 THEN
        INSERT INTO {s}.finished AS f (id, finished_at, expires)
        SELECT i, {s}.now_s(), {s}.now_s() + p_keep FROM unnest(v_done) AS i
        ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at, expires = excluded.expires;
        IF random() < 0.0625 THEN
            DELETE FROM {s}.finished WHERE expires < {s}.now_s()
                OR seq < (SELECT max(seq) FROM {s}.finished) - {finished_cap};
        END IF;
    END IF;
    RETURN QUERY SELECT unnest(v_done);
END
$$;

-- Finish p_finished (if p_worker holds them), then take up to p_limit jobs for p_worker:
-- its own list (not p_held), its manager's queue, then p_origins in order. Rows come with
-- their new held position (the take order). With nothing taken and p_wait, one row with
-- no id says whether a nudge ended the wait, and in how many seconds the next delayed job
-- of these queues is due.
-- A take that took and finished nothing commits without waiting for the WAL flush.
CREATE FUNCTION {s}.take(
    p_worker text, p_manager text, p_origins text[], p_finished text[], p_held text[],
    p_limit integer, p_wait boolean, p_keep double precision
) RETURNS TABLE (
    t_id text, t_data text, t_meta text, t_manager text, t_worker text, t_queue text,
    t_attempts integer, t_queued_at double precision, t_suspect boolean, t_position bigint,
    t_wait double precision, t_nudged boolean
) LANGUAGE plpgsql AS $$
DECLARE
    v_count integer := 0;
    v_base bigint;
    v_origin text;
    v_origins text[] := array_prepend('m:' || p_manager, p_origins);
    v_row record;
BEGIN
    IF cardinality(p_finished) > 0 THEN
        PERFORM {s}.finish(p_finished, p_worker, p_keep);
    END IF;
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    PERFORM {s}.promote();
    FOR v_row IN
        UPDATE {s}.jobs j SET origin = CASE WHEN j.origin = 'w' THEN 'm:' || p_manager ELSE j.origin END
        FROM (
            SELECT h.id FROM {s}.jobs h
            WHERE h.state = 'held' AND h.holder = p_worker AND h.id <> ALL (p_held)
            ORDER BY h.position LIMIT p_limit FOR UPDATE
        ) x
        WHERE j.id = x.id
        RETURNING j.*
    LOOP
        v_count := v_count + 1;
        t_id := v_row.id; t_data := v_row.data::text; t_meta := v_row.meta::text;
        t_manager := v_row.manager; t_worker := v_row.worker; t_queue := v_row.queue;
        t_attempts := v_row.attempts; t_queued_at := v_row.queued_at; t_suspect := v_row.suspect;
        t_position := v_row.position;
        RETURN NEXT;
    END LOOP;
    IF v_count < p_limit THEN
        v_base := nextval('{s}.positions') * 1048576;
        FOREACH v_origin IN ARRAY v_origins LOOP
            EXIT WHEN v_count >= p_limit;
            FOR v_row IN
                WITH c AS (
                    SELECT q.id, q.position FROM {s}.jobs q
                    WHERE q.state = 'queued' AND q.origin = v_origin
                    ORDER BY q.position LIMIT p_limit - v_count FOR UPDATE SKIP LOCKED
                ), r AS (
                    SELECT c.id, row_number() OVER (ORDER BY c.position) AS rn FROM c
                )
                UPDATE {s}.jobs j SET state = 'held', holder = p_worker, position = v_base + v_count + r.rn
                FROM r WHERE j.id = r.id
                RETURNING j.*
            LOOP
                v_count := v_count + 1;
                t_id := v_row.id; t_data := v_row.data::text; t_meta := v_row.meta::text;
                t_manager := v_row.manager; t_worker := v_row.worker; t_queue := v_row.queue;
                t_attempts := v_row.attempts; t_queued_at := v_row.queued_at; t_suspect := v_row.suspect;
                t_position := v_row.position;
                RETURN NEXT;
            END LOOP;
        END LOOP;
    END IF;
    IF v_count = 0 AND cardinality(p_finished) = 0 THEN
        -- Nothing a job depends on is written (at most a nudge consumed, or due delayed
        -- jobs moved to their queues, which the next take moves again if a crash loses
        -- it): the commit need not wait for its WAL to reach the disk.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF v_count = 0 AND p_wait THEN
        DELETE FROM {s}.nudges n WHERE n.worker = p_worker;
        t_nudged := FOUND;
        IF NOT t_nudged THEN
            SELECT min(d.due) - {s}.now_s() INTO t_wait FROM {s}.jobs d
            WHERE d.state = 'delayed' AND d.origin = ANY (v_origins);
        END IF;
        RETURN NEXT;
    END IF;
END
$$;

-- Say that p_names (the manager first) are alive for p_ttl seconds with p_tokens; return
-- the names whose heartbeat was not that token, with the token it had. Serialised with a
-- reaper's check of the same name by an advisory lock per name.
CREATE FUNCTION {s}.beat(p_names text[], p_tokens text[], p_ttl double precision, p_running json)
RETURNS TABLE (b_name text, b_previous text) LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision;
    v_i integer;
    v_previous text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('{schema}:' || x.n))
    FROM (SELECT DISTINCT unnest(p_names) AS n ORDER BY 1) x;
    v_now := {s}.now_s();
    FOR v_i IN 1 .. cardinality(p_names) LOOP
        SELECT h.token INTO v_previous FROM {s}.heartbeats h
        WHERE h.name = p_names[v_i] AND h.expires > v_now;
        IF v_previous IS DISTINCT FROM p_tokens[v_i] THEN
            b_name := p_names[v_i];
            b_previous := v_previous;
            RETURN NEXT;
        END IF;
    END LOOP;
    INSERT INTO {s}.heartbeats AS h (name, token, expires)
    SELECT u.name, u.token, v_now + p_ttl FROM unnest(p_names, p_tokens) AS u(name, token)
    ON CONFLICT (name) DO UPDATE SET token = excluded.token, expires = excluded.expires;
    INSERT INTO {s}.managers AS m (name, beats) VALUES (p_names[1], true)
    ON CONFLICT (name) DO UPDATE SET beats = true WHERE NOT m.beats;
    INSERT INTO {s}.workers (manager, name) SELECT p_names[1], u.name FROM unnest(p_names[2:]) AS u(name)
    ON CONFLICT DO NOTHING;
    IF p_running IS NOT NULL THEN
        INSERT INTO {s}.running AS r (worker, jobs, expires)
        SELECT e.key, e.value, v_now + p_ttl FROM json_each(p_running) e
        ON CONFLICT (worker) DO UPDATE SET jobs = excluded.jobs, expires = excluded.expires;
    END IF;
END
$$;
"""

# Session liveness (qw_postgres.sessions): whether a worker's session, or one of a
# manager's, holds its advisory lock. Rows written by an older qw-postgres, which takes no
# lock, keep false and are judged by their heartbeats alone; a constant default makes
# each ALTER a change of the catalog only (no rewrite), so running managers of either
# version are held up for no longer than the two statements.
_V2 = r"""
ALTER TABLE {s}.workers ADD COLUMN locked boolean NOT NULL DEFAULT false;
ALTER TABLE {s}.managers ADD COLUMN locked boolean NOT NULL DEFAULT false;
"""

# A heartbeat that never waits for another transaction's lock on a name: it leaves that
# name out of this beat (its row is refreshed by the next one). Version 1's beat waited, so
# a process stopped half-way through a transaction holding a name's lock (a worker in its
# registration, a reaper moving a dead worker's jobs) held up its manager's whole
# heartbeat, and with it the liveness of every sibling, for as long as it stayed stopped;
# a heartbeat that lapsed that way had its live workers reaped and their jobs run twice.
# A name left out is never judged alive by this beat, so the reaper's rule (a lapsed
# heartbeat checked under the name's lock) is unchanged. Only the function changes: a
# manager of an older version calls it with the same arguments.
_V3 = r"""
CREATE OR REPLACE FUNCTION {s}.beat(p_names text[], p_tokens text[], p_ttl double precision, p_running json)
RETURNS TABLE (b_name text, b_previous text) LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision;
    v_i integer;
    v_previous text;
    v_busy text[];
BEGIN
    SELECT coalesce(array_agg(x.n), '{}') INTO v_busy
    FROM (SELECT DISTINCT unnest(p_names) AS n) x
    WHERE NOT pg_try_advisory_xact_lock(hashtext('{schema}:' || x.n));
    v_now := {s}.now_s();
    FOR v_i IN 1 .. cardinality(p_names) LOOP
        CONTINUE WHEN p_names[v_i] = ANY (v_busy);
        SELECT h.token INTO v_previous FROM {s}.heartbeats h
        WHERE h.name = p_names[v_i] AND h.expires > v_now;
        IF v_previous IS DISTINCT FROM p_tokens[v_i] THEN
            b_name := p_names[v_i];
            b_previous := v_previous;
            RETURN NEXT;
        END IF;
    END LOOP;
    INSERT INTO {s}.heartbeats AS h (name, token, expires)
    SELECT u.name, u.token, v_now + p_ttl FROM unnest(p_names, p_tokens) AS u(name, token)
    WHERE u.name <> ALL (v_busy)
    ON CONFLICT (name) DO UPDATE SET token = excluded.token, expires = excluded.expires;
    INSERT INTO {s}.managers AS m (name, beats) VALUES (p_names[1], true)
    ON CONFLICT (name) DO UPDATE SET beats = true WHERE NOT m.beats;
    INSERT INTO {s}.workers (manager, name)
    SELECT p_names[1], u.name FROM unnest(p_names[2:]) AS u(name) WHERE u.name <> ALL (v_busy)
    ON CONFLICT DO NOTHING;
    IF p_running IS NOT NULL THEN
        INSERT INTO {s}.running AS r (worker, jobs, expires)
        SELECT e.key, e.value, v_now + p_ttl FROM json_each(p_running) e WHERE e.key <> ALL (v_busy)
        ON CONFLICT (worker) DO UPDATE SET jobs = excluded.jobs, expires = excluded.expires;
    END IF;
END
$$;
"""

#: Every migration, oldest first; a new one is appended, never edited once released.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "jobs, the failed registry, results, membership, heartbeats, schedules and unique keys", _V1
    ),
    Migration(2, "session liveness: the flags of workers and managers whose sessions hold a lock", _V2),
    Migration(3, "a heartbeat leaves out a name another transaction holds instead of waiting", _V3),
)

#: The schema version this code reads and writes.
LATEST = MIGRATIONS[-1].version


def pending(current: int) -> list[Migration]:
    """The migrations a schema at version ``current`` lacks, in order."""
    return [migration for migration in MIGRATIONS if migration.version > current]


def script(schema: str, current: int = 0) -> str:
    """The SQL that brings ``schema`` from version ``current`` to :data:`LATEST`, one
    transaction per migration, each recording itself (for ``qw migrate --print``)."""
    parts = []
    if current == 0:
        parts.append(f"CREATE SCHEMA IF NOT EXISTS {schema};\n{_ledger(schema)}")
    for migration in pending(current):
        parts.append(
            f"-- qw schema version {migration.version}: {migration.description}\nBEGIN;\n"
            f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK}, hashtext('{schema}'));\n"
            f"{migration.text(schema).strip()}\n"
            f"INSERT INTO {schema}.qw_migrations (version, description) "
            f"VALUES ({migration.version}, '{migration.description}');\nCOMMIT;"
        )
    return "\n\n".join(parts) + "\n"


def _ledger(schema: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {schema}.qw_migrations (\n"
        "    version integer PRIMARY KEY,\n"
        "    description text NOT NULL,\n"
        "    applied_at timestamptz NOT NULL DEFAULT now()\n);"
    )


def ledger_sql(schema: str) -> str:
    """The table that records the applied migrations."""
    return _ledger(schema)
