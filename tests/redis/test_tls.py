"""TLS (``rediss://``): the server's certificate is checked, its host name included; the
CA can be given in the URL (``?ssl_ca_certs=``) or with ``SSL_CERT_FILE``; a certificate
that does not verify, or a port that does not speak TLS, is reported in one line that
says what to do.

Each server is a private ``redis-server`` serving TLS only, with a certificate signed by
a CA the tests make (``qwtest_tls``): one names the host the clients connect to
(``localhost``), the other names another host.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from qwtest_redis import PrivateRedis
from qwtest_tls import make_ca, make_server_cert

from qw_cli.main import main
from qw_core.errors import BrokerUnavailable, ConfigurationError
from qw_core.models import Job
from qw_redis import connection
from qw_redis.broker import RedisBroker
from qw_redis.connection import RedisOptions

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' CA certificate (its key beside it)."""
    return make_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def right_host(ca: Path) -> Iterator[PrivateRedis]:
    """A TLS server whose certificate names localhost."""
    with PrivateRedis(tls=make_server_cert(ca.parent, "localhost", "DNS:localhost,IP:127.0.0.1")) as server:
        yield server


@pytest.fixture(scope="module")
def wrong_host(ca: Path) -> Iterator[PrivateRedis]:
    """A TLS server whose certificate, signed by the same CA, names another host."""
    with PrivateRedis(tls=make_server_cert(ca.parent, "wrong.example", "DNS:wrong.example")) as server:
        yield server


def test_the_ca_given_in_the_url_verifies_the_server(right_host: PrivateRedis, ca: Path) -> None:
    broker = RedisBroker.from_url(f"{right_host.url(host='localhost')}?ssl_ca_certs={ca}")
    try:
        job = Job.new({"over": "tls"})
        broker.queue_jobs([job])
        assert broker.queued_job_ids(None) == [job.id]
    finally:
        broker.close()


def test_the_ca_given_with_ssl_cert_file_verifies_the_server(
    right_host: PrivateRedis, ca: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    broker = RedisBroker.from_url(right_host.url(host="localhost"))
    try:
        assert broker.managers() == []
    finally:
        broker.close()


def test_a_certificate_for_another_host_is_refused_though_a_trusted_ca_signed_it(
    wrong_host: PrivateRedis, ca: Path
) -> None:
    url = f"{wrong_host.url(host='localhost')}?ssl_ca_certs={ca}"
    with pytest.raises(ConfigurationError, match="Hostname mismatch") as caught:
        RedisBroker.from_url(url)
    assert "ssl_ca_certs=PATH" in str(caught.value)
    # Not only the start-up check: every client qw opens on the URL checks the name.
    client = connection.open_client(url, RedisOptions())
    try:
        with pytest.raises(redis.ConnectionError, match="Hostname mismatch"):
            client.ping()
    finally:
        client.close()


def test_a_certificate_that_does_not_verify_is_one_line_saying_how_to_give_the_ca(
    right_host: PrivateRedis,
) -> None:
    env = {name: None for name in os.environ if name.startswith("QW_") or name == "SSL_CERT_FILE"}
    result = CliRunner().invoke(main, ["status", "--url", right_host.url(host="localhost")], env=env)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("qw: error: Redis at rediss://localhost:")
    assert "does not verify" in line
    assert "?ssl_ca_certs=PATH" in line
    assert "SSL_CERT_FILE" in line
    assert "start Redis" not in line, "not the hint for a server that is down"


def test_tls_to_a_plain_port_is_tried_once_and_says_the_port_may_be_plain() -> None:
    with PrivateRedis() as plain:
        client = redis.Redis(port=plain.port)
        before = int(client.info("stats")["total_connections_received"])
        options = RedisOptions(socket_timeout=1.0, connect_timeout=1.0)
        with pytest.raises(BrokerUnavailable, match="speaks TLS; is it a plain one") as caught:
            RedisBroker.from_url(f"rediss://localhost:{plain.port}/0", options)
        attempts = int(client.info("stats")["total_connections_received"]) - before
        client.close()
    assert str(caught.value).startswith(f"cannot reach Redis at rediss://localhost:{plain.port}/0: ")
    # Each attempt waits out a whole timeout for a handshake that never comes: one only.
    assert attempts == 1
