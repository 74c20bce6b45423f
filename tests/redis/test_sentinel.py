"""A primary that Redis Sentinel manages: ``redis+sentinel://`` URLs, read and used for real.

The URL tests need no server. The others run against a primary, a replica and three
Sentinels of this module's own (``qwtest_sentinel``), with a login on the primary and
another on the Sentinels, so that each password is shown to go where it belongs.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.sentinel
from click.testing import CliRunner
from qwtest_sentinel import SERVICE, SentinelSet
from qwtest_tls import make_ca, make_server_cert
from qwtest_wait import wait_for

from qw_cli.cmdline import masked_command_line
from qw_cli.main import main
from qw_core.errors import BrokerUnavailable, ConfigurationError
from qw_core.models import Job
from qw_redis import connection, sentinel
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions, redact_url
from qw_redis.factories import RedisBrokerFactory, factory_for

pytestmark = pytest.mark.redis  # all but the URL tests start servers

# -- URLs (no server) --------------------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    target = sentinel.parse("redis+sentinel://alice:pw@s1:26380,s2,[::1]:5000/cache/4?socket_timeout=2")
    assert target.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 5000))
    assert (target.service, target.tls) == ("cache", False)
    assert target.data_url == "redis://alice:pw@localhost/4?socket_timeout=2"


def test_the_database_is_0_unless_given() -> None:
    assert sentinel.parse("redis+sentinel://s1/mymaster").data_url.endswith("/0")
    assert sentinel.parse("redis+sentinel://s1/mymaster/").data_url.endswith("/0")


def test_the_primary_login_goes_to_the_primary_and_the_sentinel_login_to_the_sentinels() -> None:
    client = connection.open_client(
        "redis+sentinel://alice:primary-pw@s1,s2/mymaster/2?sentinel_username=watch&sentinel_password=s-pw",
        RedisOptions(),
    )
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    kw = pool.connection_kwargs
    assert (kw["username"], kw["password"], kw["db"]) == ("alice", "primary-pw", 2)
    assert kw["decode_responses"] is True  # replies decoded as every qw client's are
    for watcher in pool.sentinel_manager.sentinels:
        wkw = watcher.connection_pool.connection_kwargs
        assert (wkw["username"], wkw["password"]) == ("watch", "s-pw")
    assert connection.is_qw_client(client)


def test_rediss_sentinel_speaks_tls_to_the_primary_and_to_the_sentinels() -> None:
    client = connection.open_client(
        "rediss+sentinel://s1,s2/mymaster/0?ssl_ca_certs=/etc/ca.pem", RedisOptions()
    )
    pool = client.connection_pool
    assert issubclass(pool.connection_class, redis.sentinel.SentinelManagedSSLConnection)
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    for watcher in pool.sentinel_manager.sentinels:
        assert issubclass(watcher.connection_pool.connection_class, redis.SSLConnection)
        assert watcher.connection_pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"


def test_both_passwords_are_hidden_wherever_the_url_is_shown() -> None:
    url = "redis+sentinel://alice:hunter2@s1:26379,s2:26379/mymaster/0?sentinel_password=swordfish"
    shown = redact_url(url)
    assert shown == "redis+sentinel://alice:***@s1:26379,s2:26379/mymaster/0?sentinel_password=***"
    assert repr(RedisBrokerFactory(url=url)) == f"RedisBrokerFactory({shown!r})"
    # qw overwrites its own command line in place, character for character
    masked = masked_command_line(f"qw\0run\0--url={url}\0t:f".encode()).decode()
    assert "hunter2" not in masked
    assert "swordfish" not in masked
    assert len(masked) == len(f"qw\0run\0--url={url}\0t:f")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (
            "redis+sentinel://:hunter2@/mymaster/0",
            "name the Sentinels before the service, like redis+sentinel://",
        ),
        ("redis+sentinel://:hunter2@s1:26379", "put the service name the Sentinels monitor after the hosts"),
        (
            "redis+sentinel://:hunter2@s1/mymaster/zero",
            "the path is the service name, then a database number",
        ),
        ("redis+sentinel://:hunter2@s1/mymaster/0/1", "the path is the service name, then a database number"),
        ("redis+sentinel://:hunter2@s1:port/mymaster/0", "the port of Sentinel 's1' must be a number"),
        ("redis+sentinel://:hunter2@s1:70000/mymaster/0", "from 1 to 65535"),
        ("redis+sentinel://:hunter2@[::1/mymaster/0", "an IPv6 address goes in brackets"),
        ("redis+sentinel://:hun/ter2@s1/mymaster/0", "must be %-encoded"),
        ("redis+sentinel://:hunter2@s1/mymaster/0?socket_timeout=soon", "socket_timeout"),
        ("redis+sentinel://:hunter2@s1/mymaster/0?wait_replicas=one", "wait_replicas must be a number"),
        ("redis+sentinel://:hunter2@s1/mymaster/0?wait_timeout=0", "wait_timeout"),
    ],
)
def test_a_bad_sentinel_url_is_one_line_that_says_what_to_write(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisBroker.from_url(url)
    message = str(caught.value)
    assert says in message
    assert message.startswith("invalid Redis URL ")
    assert "hunter2" not in message
    assert "hun/ter2" not in message
    assert "\n" not in message


def test_a_url_of_another_scheme_names_the_sentinel_form_too() -> None:
    with pytest.raises(ConfigurationError, match=r"redis\+sentinel://host1:26379,host2:26379/mymaster/0"):
        RedisBroker.from_url("sentinel://s1/mymaster")


def test_qw_parameters_are_read_from_a_sentinel_url() -> None:
    url, options = connection.qw_settings(
        "redis+sentinel://s1,s2/mymaster/0?wait_replicas=2&wait_timeout=0.25&max_job_size=1000&socket_timeout=3",
        RedisOptions(),
    )
    assert url == "redis+sentinel://s1,s2/mymaster/0?socket_timeout=3"
    assert (options.wait_replicas, options.wait_timeout, options.max_job_size) == (2, 0.25, 1000)


def test_no_sentinel_answering_is_an_outage_naming_each_sentinel() -> None:
    with pytest.raises(BrokerUnavailable) as caught:
        RedisBroker.from_url("redis+sentinel://:hunter2@127.0.0.1:1,127.0.0.1:2/mymaster/0")
    message = str(caught.value)
    assert message.startswith("cannot reach any Sentinel of redis+sentinel://:***@127.0.0.1:1,127.0.0.1:2/")
    assert "127.0.0.1:1: Connection refused; 127.0.0.1:2: Connection refused" in message
    assert "hunter2" not in message


# -- against real Sentinels ---------------------------------------------------------------------

PRIMARY_PASSWORD = "primary-secret"
SENTINEL_PASSWORD = "sentinel-secret"


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelSet]:
    with SentinelSet(password=PRIMARY_PASSWORD, sentinel_password=SENTINEL_PASSWORD) as started:
        yield started


@pytest.fixture
def url(sentinels: SentinelSet) -> Iterator[str]:
    """The set's URL, its primary emptied before and after the test."""
    primary = sentinels.client(sentinels.primary.port)
    primary.flushall()
    yield sentinels.url()
    primary.flushall()
    primary.close()


def test_a_broker_opened_from_a_sentinel_url_works_on_the_primary(sentinels: SentinelSet, url: str) -> None:
    broker = RedisBroker.from_url(url)
    try:
        job = Job.new({"n": 1})
        broker.queue_jobs([job])
        assert sentinels.client(sentinels.primary.port).lrange("all:jobs", 0, -1) == [job.id]
        assert broker.describe() == redact_url(url)
        assert PRIMARY_PASSWORD not in broker.describe()
        assert SENTINEL_PASSWORD not in broker.describe()
    finally:
        broker.close()


def test_a_workers_factory_reopens_the_same_primary_through_the_sentinels(url: str) -> None:
    broker = RedisBroker.from_url(url)
    broker.queue_jobs([Job.new({"n": 1})])
    reopened = pickle.loads(pickle.dumps(broker.factory()))()  # as a spawned worker gets it
    try:
        assert reopened.queued_count() == 1
        assert isinstance(reopened._client.connection_pool, redis.sentinel.SentinelConnectionPool)
    finally:
        reopened.close()
        broker.close()


def test_a_client_from_redis_py_sentinel_serves_a_broker_and_a_factory(
    sentinels: SentinelSet, url: str
) -> None:
    """A program's own ``Sentinel(...).master_for(...)`` client (not decoding replies) is
    used through the same Sentinels, and a factory made from it reopens the same primary."""
    watchers = [("127.0.0.1", s.port) for s in sentinels.sentinels]
    manager = redis.sentinel.Sentinel(watchers, sentinel_kwargs={"password": SENTINEL_PASSWORD})
    client = manager.master_for(SERVICE, password=PRIMARY_PASSWORD)
    broker = RedisBroker(client)
    try:
        broker.queue_jobs([Job.new({"n": 1})])
        assert broker.queued_count() == 1
        shown = broker.describe()
        assert shown.startswith("redis+sentinel://:***@127.0.0.1:")
        assert shown.endswith(f"/{SERVICE}/0?sentinel_password=***")
        reopened = pickle.loads(pickle.dumps(factory_for(client)))()
        try:
            assert reopened.queued_count() == 1
        finally:
            reopened.close()
    finally:
        broker.close()
        client.close()


@pytest.mark.parametrize(
    ("change", "exc", "says"),
    [
        (
            (f"sentinel_password={SENTINEL_PASSWORD}", "sentinel_password=wrong"),
            ConfigurationError,
            "refused the login: check ?sentinel_password=",
        ),
        (
            (f"?sentinel_password={SENTINEL_PASSWORD}", ""),
            ConfigurationError,
            "wants a password: give the Sentinels' password with ?sentinel_password=",
        ),
        (
            (f":{PRIMARY_PASSWORD}@", ":wrong@"),
            ConfigurationError,
            "refused the login: check the user and password",
        ),
        (
            (f":{PRIMARY_PASSWORD}@", ""),
            ConfigurationError,
            "wants a password: put it in the URL (redis+sentinel://",
        ),
        (
            (f"/{SERVICE}/", "/othermaster/"),
            ConfigurationError,
            "monitors no primary named 'othermaster' (it monitors: mymaster)",
        ),
    ],
)
def test_a_wrong_login_or_service_is_told_apart_in_one_line(
    url: str, change: tuple[str, str], exc: type[Exception], says: str
) -> None:
    bad = url.replace(*change)
    assert bad != url
    with pytest.raises(exc) as caught:
        RedisBroker.from_url(bad)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message
    assert PRIMARY_PASSWORD not in message
    assert SENTINEL_PASSWORD not in message


def test_qw_verbs_take_a_sentinel_url_from_qw_url(url: str) -> None:
    env = {name: None for name in os.environ if name.startswith("QW_")}
    runner = CliRunner()
    queued = runner.invoke(main, ["enqueue", '{"n": 7}'], env={**env, "QW_URL": url}, catch_exceptions=False)
    assert queued.exit_code == 0, queued.output
    status = runner.invoke(main, ["--url", url, "status"], env=env, catch_exceptions=False)
    assert status.exit_code == 0, status.output
    assert any(line.split()[:3] == ["queue", "shared", "1"] for line in status.output.splitlines())
    assert PRIMARY_PASSWORD not in status.output + queued.output
    assert SENTINEL_PASSWORD not in status.output + queued.output


def test_a_broker_leaves_a_demoted_primary_that_lives_on_within_half_a_second() -> None:
    """After ``SENTINEL FAILOVER`` the old primary takes writes (and loses them) until the
    Sentinels reconfigure it, seconds later: a broker's next call after it learns of the
    move fails as an outage and the one after goes to the new primary; queueing is not
    interrupted, it just goes to the new primary."""
    with SentinelSet() as sentinels:
        old = sentinels.primary.port
        broker, producer = RedisBroker.from_url(sentinels.url()), RedisBroker.from_url(sentinels.url())
        try:
            assert broker.queued_count() == producer.queued_count() == 0  # both connected to the old one
            assert sentinels.sentinel_client().execute_command("SENTINEL", "FAILOVER", SERVICE)
            new = sentinels.wait_for_failover(old)
            assert sentinels.client(old).info("replication")["role"] == "master", "it lives on as a primary"

            def outage() -> BrokerUnavailable | None:
                try:
                    broker.queued_count()
                except BrokerUnavailable as exc:
                    return exc
                return None

            moved = wait_for(outage, timeout=2.0, what="a call to fail as the primary moved")
            assert f"the primary moved from 127.0.0.1:{old} to 127.0.0.1:{new} (a failover)" in str(moved)
            broker.register_manager("m1")
            assert sentinels.client(new).smembers("all:managers") == {"m1"}

            def queued_on_the_new_primary() -> bool:
                producer.queue_jobs([Job.new({"n": 1})])  # never raises for the move
                return sentinels.client(new).llen("all:jobs") > 0

            wait_for(queued_on_the_new_primary, timeout=2.0, what="queueing to reach the new primary")
        finally:
            broker.close()
            producer.close()


def test_rediss_sentinel_reaches_sentinels_and_primary_over_tls(tmp_path: Path) -> None:
    """Every connection speaks TLS (the Sentinels, the primary and its replica listen on
    TLS ports only), verified with the CA the URL names: a job queued through the URL is
    on the primary."""
    ca = make_ca(tmp_path)
    tls = make_server_cert(tmp_path, "localhost", "DNS:localhost,IP:127.0.0.1")
    with SentinelSet(tls=tls, ca=ca) as sentinels:
        url = sentinels.url()
        assert url.startswith("rediss+sentinel://")
        broker = RedisBroker.from_url(url)
        try:
            job = Job.new({"n": 1})
            broker.queue_jobs([job])
            assert sentinels.client(sentinels.primary.port).lrange("all:jobs", 0, -1) == [job.id]
        finally:
            broker.close()
        (tmp_path / "other").mkdir()
        other = make_ca(tmp_path / "other")
        with pytest.raises(ConfigurationError) as caught:
            RedisBroker.from_url(url.replace(f"ssl_ca_certs={ca}", f"ssl_ca_certs={other}"))
        message = str(caught.value)
        assert "has a TLS certificate that does not verify" in message
        assert "give the CA that signed it with ?ssl_ca_certs=PATH" in message
