"""Manager names: a running manager's name is never taken; a dead one's is free at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from qw_core.errors import ConfigurationError, InvalidName
from qw_core.identity import identity_alive, process_identity
from qw_core.manager import Manager
from qw_core.memory import MemoryBroker
from qw_core.naming import check_manager_name, claim_name
from qw_core.worker import Worker

HEARTBEAT = 0.2
HOST = socket.gethostname()


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


@pytest.fixture
def dead_identity() -> str:
    """The identity of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        identity = process_identity(child.pid)
    finally:
        child.kill()
        child.wait()
    return identity


def hold(broker: MemoryBroker, name: str, identity: str, ttl: float = 30) -> None:
    broker.beat(manager=name, token=f"0123@{identity}", workers={}, ttl=ttl)


def test_identity_tells_a_live_process_from_a_dead_one(dead_identity: str) -> None:
    assert identity_alive(process_identity()) is True
    assert identity_alive(process_identity(os.getppid())) is True
    assert identity_alive(dead_identity) is False


def test_identity_tells_a_reused_pid_from_its_holder() -> None:
    host, pid, start = process_identity(os.getppid()).rsplit(":", 2)
    assert identity_alive(f"{host}:{pid}:{int(start) + 1}") is False


@pytest.mark.parametrize("identity", ["elsewhere.example:12:34", "", "nonsense", f"{HOST}:x:1"])
def test_identity_on_another_host_or_unreadable_is_unknown(identity: str) -> None:
    assert identity_alive(identity) is None


def test_a_free_default_name_is_the_host_name(broker: MemoryBroker) -> None:
    assert claim_name(broker, None, heartbeat=HEARTBEAT) == HOST


def test_a_second_manager_on_this_host_gets_the_next_default_name(broker: MemoryBroker) -> None:
    hold(broker, HOST, process_identity(os.getppid()))
    assert claim_name(broker, None, heartbeat=HEARTBEAT) == f"{HOST}-2"
    hold(broker, f"{HOST}-2", process_identity())
    assert claim_name(broker, None, heartbeat=HEARTBEAT) == f"{HOST}-3"


def test_a_name_given_that_a_running_manager_holds_is_refused_with_what_to_do(broker: MemoryBroker) -> None:
    hold(broker, "billing", process_identity(os.getppid()))
    with pytest.raises(ConfigurationError) as refused:
        claim_name(broker, "billing", heartbeat=HEARTBEAT)
    message = str(refused.value)
    assert "'billing' is in use by a running manager" in message
    assert f"pid {os.getppid()}" in message
    assert "-n NAME" in message
    assert "\n" not in message


def test_a_crashed_managers_name_is_free_at_once(broker: MemoryBroker, dead_identity: str) -> None:
    hold(broker, "billing", dead_identity)
    hold(broker, HOST, dead_identity)
    started = time.monotonic()
    assert claim_name(broker, "billing", heartbeat=10) == "billing"
    assert claim_name(broker, None, heartbeat=10) == HOST
    assert time.monotonic() - started < 5, "a dead holder on this host needs no waiting"


def test_a_holder_on_another_host_that_keeps_beating_holds_its_name(broker: MemoryBroker) -> None:
    stop = threading.Event()

    def keep_beating() -> None:
        while not stop.is_set():
            hold(broker, "billing", "elsewhere.example:12:34")
            stop.wait(HEARTBEAT / 4)

    hold(broker, "billing", "elsewhere.example:12:34")
    beater = threading.Thread(target=keep_beating)
    beater.start()
    try:
        with pytest.raises(ConfigurationError, match=r"on elsewhere\.example, beating"):
            claim_name(broker, "billing", heartbeat=HEARTBEAT)
    finally:
        stop.set()
        beater.join()


@pytest.mark.parametrize("token", ["0123@elsewhere.example:12:34", "0123"])
def test_a_silent_holder_on_another_host_or_of_an_older_qw_frees_its_name(
    broker: MemoryBroker, token: str
) -> None:
    broker.beat(manager="billing", token=token, workers={}, ttl=30)
    started = time.monotonic()
    assert claim_name(broker, "billing", heartbeat=HEARTBEAT) == "billing"
    assert time.monotonic() - started >= HEARTBEAT, "it watched for a beat before taking the name"


def test_two_managers_in_one_process_get_two_names(broker: MemoryBroker) -> None:
    first = Manager("qwtest_targets:record", broker, num_workers=1, heartbeat=HEARTBEAT)
    second = Manager("qwtest_targets:record", broker, num_workers=1, heartbeat=HEARTBEAT)
    first.start()
    try:
        assert first.name == HOST
        assert second.claim_name() == f"{HOST}-2"
        assert second.claim_name() == f"{HOST}-2", "claiming again keeps the name"
        with pytest.raises(ConfigurationError, match="in use"):
            Manager("qwtest_targets:record", broker, num_workers=1, name=HOST).claim_name()
    finally:
        first.stop()
        first.join()
    assert claim_name(broker, None, heartbeat=HEARTBEAT) == HOST, "a stopped manager frees its name"


# -- names no worker can have ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["m.123", "host.example.7", "a.1.2", "web-01.0"])
def test_a_manager_name_that_a_worker_could_have_is_refused(broker: MemoryBroker, name: str) -> None:
    # Workers are named <manager>.<pid>: manager 'm.123' would share the keys (queue,
    # heartbeat) of worker 123 of manager 'm'.
    owner, _, pid = name.rpartition(".")
    with pytest.raises(
        InvalidName, match=rf"as the name of worker {pid} of manager '{owner}' does"
    ) as caught:
        claim_name(broker, name, heartbeat=HEARTBEAT)
    assert f"such as {owner}-{pid}" in str(caught.value)
    with pytest.raises(InvalidName):
        Manager("qw_core.examples:echo", broker, name=name, num_workers=1)
    with pytest.raises(InvalidName):
        Worker(broker, "qw_core.examples:echo", manager=name)


@pytest.mark.parametrize("name", ["m", "host.example.com", "m.1a", "v1.2-x", "m.", "1", "123.m"])
def test_names_no_worker_has_stay_valid_for_managers(broker: MemoryBroker, name: str) -> None:
    assert check_manager_name(broker, name) == name
    assert claim_name(broker, name, heartbeat=HEARTBEAT) == name


def test_a_host_name_that_ends_in_digits_gives_a_default_no_worker_has(
    broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "10.0.0.5")
    assert claim_name(broker, None, heartbeat=HEARTBEAT) == "10.0.0-5"


@pytest.mark.parametrize(
    "name", ["a\u200bb", "invoice\u202efdp.exe", "\ufeffm", "x\u2066y", "rtl\u200f", "soft\u00adhyphen"]
)
def test_invisible_and_text_direction_characters_are_refused(broker: MemoryBroker, name: str) -> None:
    with pytest.raises(InvalidName, match="invisible or text-direction") as caught:
        broker.check_name(name)
    assert f"U+{ord(next(c for c in name if not c.isalnum() and c not in '.')):04X}" in str(caught.value)
