"""URLs, options, password redaction, start-up errors, factories and the entry point."""

from __future__ import annotations

import pickle
import time

import fakeredis
import pytest
import redis
from redis._parsers.base import BaseParser
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_support import REDIS_HOST, free_port, redis_url, shared_port

from qw_core.backends import load_backend, open_broker
from qw_core.errors import BrokerUnavailable, ConfigurationError
from qw_core.models import Job
from qw_redis import connection
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions, redact_url
from qw_redis.factories import FakeRedisBrokerFactory, RedisBrokerFactory

REDIS_DB = 10


# -- URLs ------------------------------------------------------------------------------


def kwargs_of(url: str) -> dict[str, object]:
    client = connection.open_client(url, RedisOptions())
    kwargs = dict(client.connection_pool.connection_kwargs)
    kwargs["connection_class"] = client.connection_pool.connection_class
    return kwargs


def test_redis_url_with_acl_user_password_and_db() -> None:
    kw = kwargs_of("redis://alice:s%40cret@redis.example:6380/4")
    assert (kw["host"], kw["port"], kw["db"]) == ("redis.example", 6380, 4)
    assert (kw["username"], kw["password"]) == ("alice", "s@cret")
    assert kw["decode_responses"] is True
    assert kw["socket_timeout"] == 5.0


def test_rediss_url_uses_tls() -> None:
    kw = kwargs_of("rediss://:pw@redis.example/2")
    assert kw["connection_class"] is redis.SSLConnection
    assert (kw["password"], kw["db"]) == ("pw", 2)


def test_unix_url_uses_the_socket_and_db_query() -> None:
    kw = kwargs_of("unix://bob:pw@/run/redis.sock?db=3")
    assert kw["connection_class"] is redis.UnixDomainSocketConnection
    assert (kw["path"], kw["db"], kw["username"], kw["password"]) == ("/run/redis.sock", 3, "bob", "pw")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://user:hunter2@host:6379/0", "scheme"),
        ("redis://user:hunter2@host:6379/zero", "database number"),
        ("redis://user:hunter2@host:port/0", "invalid Redis URL"),
        ("redis://user:hunter2/x@host:6379/0", "must be %-encoded"),
        ("unix://user:hunter2@", "socket path"),
        ("redis://user:hunter2@host:6379/0?socket_timeout=soon", "invalid Redis URL"),
        # Host names no resolver takes: an encoding error at connection time, before.
        (f"redis://user:hunter2@{'a' * 64}:6379/0", "is not a host name \\(label too long\\)"),
        ("redis://user:hunter2@a..b:6379/0", "'a..b' is not a host name"),
    ],
)
def test_malformed_urls_are_configuration_errors_without_the_password(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why) as caught:
        RedisBroker.from_url(url)
    assert "hunter2" not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:hunter2@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis://alice:hunter2@localhost:6379/0", "redis://alice:***@localhost:6379/0"),
        ("rediss://alice:hun@ter2@host/1", "rediss://alice:***@host/1"),
        ("redis://alice@localhost/0", "redis://alice@localhost/0"),
        ("unix:///tmp/r.sock?db=1&password=hunter2", "unix:///tmp/r.sock?db=1&password=***"),
        ("redis://alice:hunter2@host:notaport/0", "redis://alice:***@host:notaport/0"),
        ("redis://alice:hun/ter2@host:6379/0", "redis://alice:***@host:6379/0"),
        ("redis://alice:hun?ter2@host:6379/0", "redis://alice:***@host:6379/0"),
        ("redis://alice:hun#ter2@host:6379/0", "redis://alice:***@host:6379/0"),
        ("redis://:hun#ter2@host:6379/0", "redis://:***@host:6379/0"),
        (
            "rediss://host/0?ssl_certfile=c.pem&ssl_password=hunter2",
            "rediss://host/0?ssl_certfile=c.pem&ssl_password=***",
        ),
        ("redis://host/0?client_name=a@b&password=hunter2", "redis://host/0?client_name=a@b&password=***"),
        ("redis://host/0#hunter2", "redis://host/0#***"),
        ("redis://alice:%68unter2@host/0", "redis://alice:***@host/0"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "redis://alice:hun#ter2@host:6379/0",  # the '#' ends the host part for a URL parser
        "redis://:hun#ter2@host:6379/0",
        "redis://alice:hun#ter2@host:port/0",
    ],
)
def test_a_password_with_an_unencoded_hash_is_refused_without_showing_any_of_it(url: str) -> None:
    with pytest.raises(ConfigurationError, match="must be %-encoded") as caught:
        RedisBroker.from_url(url)
    assert "hun" not in str(caught.value)
    assert "ter2" not in str(caught.value)


def test_a_key_passphrase_in_the_url_is_never_shown() -> None:
    port = free_port()
    with pytest.raises(BrokerUnavailable, match="cannot reach Redis") as caught:
        RedisBroker.from_url(f"rediss://127.0.0.1:{port}/0?ssl_password=hunter2")
    assert "hunter2" not in str(caught.value)
    assert f"rediss://127.0.0.1:{port}/0?ssl_password=***" in str(caught.value)


def test_options_keep_the_socket_timeout_above_the_blocking_slice() -> None:
    with pytest.raises(ConfigurationError, match="must exceed block_slice"):
        RedisOptions(block_slice=2.0, socket_timeout=1.0)
    with pytest.raises(ValueError, match="max_job_size"):
        RedisOptions(max_job_size=-1)


# -- start-up and connection errors --------------------------------------------------------


def test_a_redis_that_is_down_is_one_clear_line() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        RedisBroker.from_url(f"redis://alice:hunter2@127.0.0.1:{port}/0")
    shown = f"redis://alice:***@127.0.0.1:{port}/0"
    assert str(caught.value) == f"cannot reach Redis at {shown}: Connection refused"
    assert time.monotonic() - started < 5
    with pytest.raises(BrokerUnavailable, match="No such file or directory"):
        RedisBroker.from_url("unix:///nonexistent/redis.sock")


def test_the_backend_is_found_by_its_entry_point_name() -> None:
    assert load_backend("redis") is RedisBroker
    with pytest.raises(BrokerUnavailable, match="cannot reach Redis"):
        open_broker("redis", f"redis://127.0.0.1:{free_port()}/0")


def test_refused_credentials_are_reported_without_the_password(redis_db: int) -> None:
    url = f"redis://qw-no-such-user:hunter2@{REDIS_HOST}:{shared_port()}/{redis_db}"
    with pytest.raises(ConfigurationError) as caught:  # the URL is wrong, not the server down
        RedisBroker.from_url(url)
    message = str(caught.value)
    shown = f"redis://qw-no-such-user:***@{REDIS_HOST}:{shared_port()}/{redis_db}"
    assert message == f"Redis at {shown} refused the login: check the user and password in the URL"
    assert "hunter2" not in message


def test_losing_redis_later_raises_broker_unavailable() -> None:
    retry = Retry(NoBackoff(), 0)
    client = redis.Redis(host="127.0.0.1", port=free_port(), decode_responses=True, retry=retry)
    broker = RedisBroker(client)
    with pytest.raises(BrokerUnavailable, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
        broker.managers()
    with pytest.raises(BrokerUnavailable):
        broker.take(manager="m1", worker="m1.1")


def test_redis_errors_become_backend_errors(real_broker: RedisBroker, real_client: redis.Redis) -> None:
    from qw_core.errors import BackendError

    real_client.set("all:managers", "not a set")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        real_broker.managers()


# -- describe and factories ----------------------------------------------------------------


def test_describe_shows_the_url_without_password(redis_db: int) -> None:
    port = shared_port()
    client = redis.Redis(host=REDIS_HOST, port=port, db=redis_db, username="u", password="hunter2")
    assert RedisBroker(client).describe() == f"redis://u:***@{REDIS_HOST}:{shared_port()}/{redis_db}"
    assert RedisBroker.from_url(redis_url(redis_db)).describe() == redis_url(redis_db)
    assert RedisBroker(fakeredis.FakeRedis(decode_responses=True)).describe().startswith("fakeredis")


def test_factory_pickles_and_opens_an_equivalent_broker(real_broker: RedisBroker, redis_db: int) -> None:
    factory = real_broker.factory()
    assert isinstance(factory, RedisBrokerFactory)
    other = pickle.loads(pickle.dumps(factory))()
    job = Job.new({"n": 1})
    real_broker.queue_job(job)
    assert other.take(manager="m1", worker="m1.1") == [job]
    other.close()


def test_factory_of_a_broker_built_on_a_client_keeps_its_settings(
    real_client: redis.Redis, redis_db: int
) -> None:
    client = redis.Redis(host=REDIS_HOST, port=shared_port(), db=redis_db, decode_responses=True)
    factory = RedisBroker(client).factory()
    assert "hunter2" not in repr(factory)
    other = pickle.loads(pickle.dumps(factory))()
    other.register_manager("m1")
    assert real_client.smembers("all:managers") == {"m1"}
    assert other.describe() == redis_url(redis_db)
    other.close()


def test_factory_repr_hides_the_password() -> None:
    factory = RedisBrokerFactory(url="redis://u:hunter2@host:6379/0")
    assert repr(factory) == "RedisBrokerFactory('redis://u:***@host:6379/0')"


def test_fakeredis_factory_shares_the_fake_server(fake_broker: RedisBroker) -> None:
    factory = fake_broker.factory()
    assert isinstance(factory, FakeRedisBrokerFactory)
    other = factory()
    job = Job.new({"n": 1})
    fake_broker.queue_job(job)
    assert other.take(manager="m1", worker="m1.1") == [job]


def test_any_client_is_accepted_and_left_as_it_was() -> None:
    # A client that does not decode (and one that decodes strictly) works: the broker talks
    # through a client of its own on the same server, and leaves the caller's alone.
    raw = fakeredis.FakeRedis()
    broker = RedisBroker(raw)
    job = Job.new({"n": 1})
    broker.queue_job(job)
    assert broker.take(manager="m", worker="m.1") == [job]
    assert raw.lrange("m.1:jobs", 0, -1) == [job.id.encode()]
    assert raw.connection_pool.connection_kwargs.get("decode_responses") in (None, False)
    broker.close()
    assert raw.ping(), "closing the broker leaves the caller's client open"


@pytest.mark.parametrize(
    "reply",
    [
        "OOM command not allowed when used memory > 'maxmemory'.",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.",
        "LOADING Redis is loading the dataset in memory",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "NOREPLICAS Not enough good replicas to write.",
        "READONLY You can't write against a read only replica.",
    ],
)
@pytest.mark.parametrize("in_pipeline", [False, True])
def test_replies_of_a_server_that_refuses_work_for_a_while_are_outages(reply: str, in_pipeline: bool) -> None:
    # As redis-py parses them: some get a class of their own, with the code taken off;
    # one in a pipeline gets its message prefixed with the command that caused it.
    exc = BaseParser.parse_error(reply)
    if in_pipeline:
        exc.args = (f"Command # 1 (EVALSHA abc 3 all:jobs) of pipeline caused error: {exc.args[0]}",)
    translated = connection.translate(exc, "redis://x:6379/0")
    assert isinstance(translated, BrokerUnavailable)
    assert not isinstance(
        connection.translate(BaseParser.parse_error("WRONGTYPE no"), "x"), BrokerUnavailable
    )
