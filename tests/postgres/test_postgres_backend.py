"""What the PostgreSQL backend adds to the contract: transactional enqueue through a real
worker, its schema's migrations (concurrent, refused when newer, forbidden by the URL),
and one clear line for each kind of bad input through ``qw``."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from pg_support import start_manager
from qwtest_postgres import SERVER_URL, schema_url
from reliability_support import runs, stop_manager, wait_for

import qw_postgres
from qw_core.errors import BrokerUnavailable, ConfigurationError, InvalidJob, QwError
from qw_core.models import Failure, Job
from qw_postgres.broker import PostgresBroker
from qw_postgres.migrate import SchemaNotReady, SchemaTooNew
from qw_postgres.schema import LATEST, MIGRATIONS, ledger_sql

pytestmark = [pytest.mark.slow]


def test_a_job_queued_in_a_transaction_runs_only_once_it_commits(
    pg_url: str, pg_schema: str, record_dir: Path
) -> None:
    committed, rolled_back, marker = Job.new({"n": 1}), Job.new({"n": 2}), Job.new({"n": 3})
    manager = start_manager(pg_url, "tx", num_workers=1)
    try:
        with psycopg.connect(SERVER_URL) as conn:  # not autocommit: a transaction is open
            qw_postgres.enqueue(conn, committed, schema=pg_schema)
            with contextlib.closing(PostgresBroker.from_url(pg_url)) as other:
                assert other.get_job(committed.id) is None, "invisible before the commit"
            conn.commit()
            wait_for(lambda: runs(record_dir)[committed.id] == 1, what="the committed job to run")
            qw_postgres.enqueue(conn, [rolled_back], schema=pg_schema)
            conn.rollback()
        with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker:
            broker.queue_job(marker)
            wait_for(lambda: runs(record_dir)[marker.id] == 1, what="a job queued after the rollback")
            assert broker.get_job(rolled_back.id) is None
            assert broker.job_status(rolled_back.id).state.value == "unknown"
    finally:
        stop_manager(manager)
    assert rolled_back.id not in runs(record_dir, "began"), "a rollback leaves no trace"


def test_the_broker_queues_with_the_callers_connection_too(pg_url: str) -> None:
    job = Job.new({"n": 1})
    with contextlib.closing(PostgresBroker.from_url(pg_url)) as broker, psycopg.connect(SERVER_URL) as conn:
        broker.queue_job(job)
        other = Job.new({"n": 2})
        broker.queue_jobs([other], connection=conn)
        assert broker.queued_job_ids() == [job.id]
        conn.rollback()
        assert broker.queued_job_ids() == [job.id]


def test_managers_that_start_at_once_create_the_schema_once(pg_url: str, pg_schema: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        brokers = list(pool.map(lambda _: PostgresBroker.from_url(pg_url), range(4)))
    for broker in brokers:
        broker.close()
    with psycopg.connect(SERVER_URL) as conn:
        versions = conn.execute(f"SELECT version FROM {pg_schema}.qw_migrations ORDER BY version").fetchall()
    assert versions == [(m.version,) for m in MIGRATIONS]


def test_managers_that_start_at_once_upgrade_an_older_schema_once(pg_url: str, pg_schema: str) -> None:
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:  # version 1, as an older qw-postgres made it
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {pg_schema}")
        conn.execute(ledger_sql(pg_schema))
        conn.execute(MIGRATIONS[0].text(pg_schema).encode())
        conn.execute(f"INSERT INTO {pg_schema}.qw_migrations (version, description) VALUES (1, 'v1')")
        conn.execute(f"INSERT INTO {pg_schema}.workers (manager, name) VALUES ('old', 'old.1')")
    with ThreadPoolExecutor(4) as pool:
        brokers = list(pool.map(lambda _: PostgresBroker.from_url(pg_url), range(4)))
    for broker in brokers:
        broker.close()
    with psycopg.connect(SERVER_URL) as conn:
        versions = conn.execute(f"SELECT version FROM {pg_schema}.qw_migrations ORDER BY version").fetchall()
        assert versions == [(m.version,) for m in MIGRATIONS]
        old = conn.execute(f"SELECT locked FROM {pg_schema}.workers WHERE name = 'old.1'").fetchall()
        assert old == [(False,)], "a worker an older version registered is judged by its heartbeat alone"
        # An older qw-postgres still running writes its rows as before.
        conn.execute(f"INSERT INTO {pg_schema}.managers (name) VALUES ('old')")


def test_a_schema_newer_than_the_code_is_refused_and_left_alone(pg_url: str, pg_schema: str) -> None:
    PostgresBroker.from_url(pg_url).close()
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {pg_schema}.qw_migrations (version, description) VALUES (%s, 'future')",
            [LATEST + 1],
        )
    with pytest.raises(SchemaTooNew, match="newer qw-postgres"):
        PostgresBroker.from_url(pg_url)
    with pytest.raises(SchemaTooNew):
        PostgresBroker.apply_migrations(pg_url)


def test_migrate_false_refuses_a_missing_schema_and_qw_migrate_creates_it(pg_schema: str) -> None:
    url = schema_url(pg_schema, migrate="false")
    with pytest.raises(SchemaNotReady, match="qw migrate"):
        PostgresBroker.from_url(url)
    script = PostgresBroker.migration_script(url)
    assert f"CREATE TABLE {pg_schema}.jobs" in script
    first, *later = PostgresBroker.apply_migrations(url)
    assert first.startswith(f"schema {pg_schema}: applied version 1 (jobs, the failed registry")
    assert len(later) == LATEST - 1
    assert PostgresBroker.apply_migrations(url) == []
    assert PostgresBroker.migration_script(url) == ""
    PostgresBroker.from_url(url).close()


def test_the_printed_script_makes_the_same_schema(pg_schema: str) -> None:
    url = schema_url(pg_schema, migrate="false")
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(PostgresBroker.migration_script(url).encode())
    broker = PostgresBroker.from_url(url)
    try:
        broker.queue_job(Job.new({"n": 1}))
        assert len(broker.take(manager="m", worker="m.1")) == 1
    finally:
        broker.close()


def qw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qw_cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:1/postgres",
            "does not answer: Connection refused; start PostgreSQL",
        ),
        ("postgresql://qw_no_such_role@127.0.0.1:5432/postgres", 'refused the login: role "qw_no_such_role"'),
        ("postgresql://postgres@127.0.0.1:5432/qw_no_such_db", "has no database 'qw_no_such_db'; create it"),
        ("redis://127.0.0.1:6379/0", "is not a PostgreSQL URL"),
        ("postgresql://postgres@127.0.0.1/postgres?schema=Bad-Name", "is not a lower-case SQL identifier"),
        # Once "unexpected UnicodeError" (the host name's IDNA encoding, the URL's UTF-8).
        (f"postgresql://postgres@{'a' * 64}:5432/postgres", "invalid PostgreSQL URL"),
        (
            "postgresql://postgres@a..b:5432/postgres",
            "invalid PostgreSQL URL postgresql://postgres@a..b:5432/",
        ),
        ("postgresql://postgres@h\udcff:5432/postgres", ":5432/postgres: 'utf-8' codec can't encode"),
    ],
)
def test_bad_input_is_one_line_through_qw(url: str, expected: str) -> None:
    for command in (["status"], ["enqueue", "{}"], ["migrate"]):
        done = qw(*command, "--backend", "postgres", "--url", url)
        assert done.returncode == 1, done
        [line] = done.stderr.splitlines()
        assert line.startswith("qw: error: PostgreSQL at") or "qw: error:" in line
        assert expected in line


def test_a_newer_schema_is_one_line_through_qw(pg_url: str, pg_schema: str) -> None:
    PostgresBroker.from_url(pg_url).close()
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {pg_schema}.qw_migrations (version, description) VALUES (%s, 'future')",
            [LATEST + 1],
        )
    done = qw("status", "--backend", "postgres", "--url", pg_url)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert "made by a newer qw-postgres" in line
    with psycopg.connect(SERVER_URL) as conn:
        [(version,)] = conn.execute(f"SELECT max(version) FROM {pg_schema}.qw_migrations").fetchall()
    assert version == LATEST + 1, "left alone"


def test_a_password_in_the_url_never_shows() -> None:
    done = qw("status", "--backend", "postgres", "--url", "postgresql://postgres:s3cret@127.0.0.1:1/postgres")
    assert "s3cret" not in done.stderr + done.stdout
    assert "postgres:***@" in done.stderr


def test_every_verb_works_on_postgres(pg_url: str) -> None:
    [job_id] = qw("enqueue", "--backend", "postgres", "--url", pg_url, '{"n": 1}').stdout.split()
    assert "queued" in qw("job", job_id, "--backend", "postgres", "--url", pg_url).stdout
    assert job_id in qw("jobs", "--backend", "postgres", "--url", pg_url).stdout
    for verb in ("status", "managers", "failed"):
        assert qw(verb, "--backend", "postgres", "--url", pg_url).returncode == 0, verb
    assert "nothing to migrate" in qw("migrate", "--backend", "redis").stderr


def test_an_outage_is_an_unavailable_broker_and_a_later_call_reconnects(pg_url: str) -> None:
    broker = PostgresBroker.from_url(pg_url)
    try:
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            [(pid,)] = broker._connection().execute("SELECT pg_backend_pid()").fetchall()
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(BrokerUnavailable):
            broker.managers()
        assert broker.managers() == []  # a new connection
    finally:
        broker.close()


def test_a_program_limit_is_a_one_line_error_not_an_outage(pg_broker: PostgresBroker) -> None:
    """An index entry over PostgreSQL's limit (a job id of 1,000 emoji, 4,000 bytes) is a
    class 54 error, which psycopg makes an OperationalError as it does a lost connection;
    it fails the same way every time, so it is an error, not an outage to wait out (a
    scheduler backs off all its schedules for an outage; a caller retries it)."""
    rng = random.Random(42)  # no repeats: PostgreSQL cannot compress the entry under its limit
    job = Job(id="".join(chr(rng.randrange(0x10000, 0x20000)) for _ in range(1000)), data={})
    with pytest.raises(QwError, match="index row size") as raised:
        pg_broker.queue_job(job)
    assert not isinstance(raised.value, BrokerUnavailable)
    assert pg_broker.queued_job_ids() == []


def test_libpq_settings_in_the_url_reach_the_server_as_written(pg_schema: str) -> None:
    # qw takes its own settings out of the query and gives libpq the rest: a space written
    # %20 (as libpq's URIs want it) must stay a space, not become a "+" libpq keeps as is.
    url = schema_url(pg_schema, options="-c%20lock_timeout%3D1234")
    broker = PostgresBroker.from_url(url)
    try:
        assert broker._column("SHOW lock_timeout") == ["1234ms"]
    finally:
        broker.close()


def test_an_int_too_long_to_write_as_text_is_an_invalid_job(pg_broker: PostgresBroker) -> None:
    """json.dumps raises ValueError past Python's limit of digits (4300 by default): it
    escaped queue_job as that, where every other value JSON cannot carry is InvalidJob."""
    with pytest.raises(InvalidJob, match=r"data\['n'\] holds an int too long to write as text"):
        pg_broker.queue_job(Job.new({"n": 10**5000}))
    assert pg_broker.queued_job_ids() == []


def test_a_bad_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="migrate must be true or false"):
        PostgresBroker.from_url("postgresql://postgres@127.0.0.1/postgres?migrate=maybe")
    with pytest.raises(ConfigurationError, match="liveness must be sessions or heartbeats"):
        PostgresBroker.from_url("postgresql://postgres@127.0.0.1/postgres?liveness=locks")


def test_a_failure_with_keys_this_version_does_not_know_is_read(
    pg_broker: PostgresBroker, pg_schema: str
) -> None:
    # The rule every backend shares (qw_core.encoding): a newer qw's extra keys are ignored.
    job = Job.new({"n": 1}, manager="m")
    pg_broker.queue_job(job)
    pg_broker.take(manager="m", worker="m.1")
    assert pg_broker.fail_job(worker="m.1", job=job, failure=Failure(exc_type="E", message="bad"))
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        done = conn.execute(
            f"UPDATE {pg_schema}.failed SET failure = (failure::jsonb || %s::jsonb)::json WHERE id = %s",
            ['{"later": 1}', job.id],
        )
        assert done.rowcount == 1
    found = pg_broker.get_failed(job.id)
    assert found is not None
    assert found.job.id == job.id
    assert (found.failure.exc_type, found.failure.message) == ("E", "bad")
    assert [entry.job.id for entry in pg_broker.failed_jobs()] == [job.id]


def _take_commit_mode(broker: PostgresBroker, finished: list[str]) -> tuple[int, str]:
    """Run the take statement in a transaction of its own; how many jobs it took and the
    ``synchronous_commit`` its commit will use."""
    conn = broker._connection()
    params = ["w.1", "w", ["default"], finished, [], 10, True, 60.0]
    with conn.transaction():
        rows = conn.execute(broker._sql["TAKE"], params).fetchall()
        [(mode,)] = conn.execute("SHOW synchronous_commit").fetchall()
    return sum(1 for row in rows if row[0] is not None), str(mode)


def test_a_take_that_takes_or_finishes_a_job_waits_for_the_wal_flush(pg_broker: PostgresBroker) -> None:
    assert _take_commit_mode(pg_broker, []) == (0, "off")  # nothing taken or finished
    job = Job.new({"n": 1})
    pg_broker.queue_job(job)
    assert _take_commit_mode(pg_broker, []) == (1, "on")
    assert _take_commit_mode(pg_broker, [job.id]) == (0, "on")  # it finished the job
    assert pg_broker.job_status(job.id).state.value == "succeeded"


def test_a_nudge_or_an_empty_take_leaves_the_connection_durable(pg_broker: PostgresBroker) -> None:
    """Their commits skip the WAL flush for their own transaction only: the next
    statement on the connection (a job queued with it) is durable again."""
    conn = pg_broker._connection()
    pg_broker.nudge("w.1")
    assert conn.execute("SHOW synchronous_commit").fetchall() == [("on",)]
    assert pg_broker.take(manager="w", worker="w.1", timeout=0.01) == []
    assert conn.execute("SHOW synchronous_commit").fetchall() == [("on",)]
