"""The broker contract, in part: sessions, for a backend that declares
``capabilities.session_liveness`` (see :class:`~qw_core.broker.Membership`).

Mixed into :class:`qw_core.testing.contract.BrokerContract`; see there for how to use it.
A session is a broker object: the one that registered a worker, and each one that beat
for a manager. Here a session ends the way a killed process's does: the broker object is
closed without deregistering. Heartbeats are written with a long TTL, so a worker reaped
here was judged by its sessions, never by a lapsed heartbeat. A worker that must not be
reaped is checked beside a control group whose sessions all ended, reaped first, so that
"not reaped" is not merely "not reaped yet".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from qw_core.broker import Broker, Reaped
from qw_core.testing import MANAGER, OTHER_MANAGER, OTHER_WORKER, WORKER, ids, make_jobs, wait_reaped
from qw_core.testing.contract.base import ContractPart

#: The TTL of every heartbeat written here: far longer than any of these tests runs.
LONG_TTL = 120.0
#: The ``ttl`` given to reap (it skips a round while the server started less than this ago).
REAP_TTL = 0.5
#: How long a reaper may take to see that sessions ended (generous, for a busy machine).
SEEN_WITHIN = 20.0


class SessionContract(ContractPart):
    """A worker whose process is gone, with its manager's, is reaped before its heartbeat
    lapses; one whose session, or whose manager's session, is open is not."""

    requires = "session_liveness"

    # Not autouse: see UniqueContract.unique_kept.
    @pytest.fixture
    def sessions(self, broker: Broker) -> Iterator[list[Broker]]:
        """The broker objects a test opens as sessions (closed afterwards); skips the test
        on a backend without ``capabilities.session_liveness``."""
        if not broker.capabilities.session_liveness:
            pytest.skip("the backend keeps no sessions (capabilities.session_liveness is false)")
        opened: list[Broker] = []
        yield opened
        for session in opened:
            with contextlib.suppress(Exception):
                session.close()

    def _manager(self, broker: Broker, opened: list[Broker], manager: str, workers: dict[str, str]) -> Broker:
        session = broker.factory()()
        opened.append(session)
        session.beat(manager=manager, token=f"{manager}-token", workers=workers, ttl=LONG_TTL)
        return session

    def _worker(self, broker: Broker, opened: list[Broker], manager: str, worker: str) -> Broker:
        session = broker.factory()()
        opened.append(session)
        session.register_worker(manager=manager, worker=worker)
        return session

    def _reap_until(self, broker: Broker, worker: str) -> list[Reaped]:
        """Reap (no lease) until ``worker`` is reaped; every worker reaped on the way."""
        reaped: list[Reaped] = []
        deadline = time.monotonic() + SEEN_WITHIN
        while not any(r.worker == worker for r in reaped):
            assert time.monotonic() < deadline, f"{worker} was not reaped within {SEEN_WITHIN}s"
            reaped += broker.reap(owner="test", lease=0, ttl=REAP_TTL) or []
            time.sleep(0.02)
        return reaped

    def _control_group(self, broker: Broker, opened: list[Broker]) -> list[Broker]:
        """OTHER_MANAGER and OTHER_WORKER, each with a session (to end with the test's)."""
        return [
            self._manager(broker, opened, OTHER_MANAGER, {OTHER_WORKER: "o-token"}),
            self._worker(broker, opened, OTHER_MANAGER, OTHER_WORKER),
        ]

    def test_a_worker_whose_manager_group_is_gone_is_reaped_before_its_heartbeat_lapses(
        self, broker: Broker, sessions: list[Broker]
    ) -> None:
        jobs = make_jobs(2)
        broker.queue_jobs(jobs)
        manager = self._manager(broker, sessions, MANAGER, {WORKER: "w-token"})
        worker = self._worker(broker, sessions, MANAGER, WORKER)
        assert ids(worker.take(manager=MANAGER, worker=WORKER, limit=2)) == ids(jobs)
        assert broker.reap(owner="test", lease=0, ttl=REAP_TTL) == [], "both sessions are open"
        worker.close()  # the whole group killed: neither deregisters
        manager.close()
        [reaped] = [r for r in self._reap_until(broker, WORKER) if r.worker == WORKER]
        assert (reaped.manager, reaped.requeued, reaped.failed) == (MANAGER, 2, 0)
        assert broker.heartbeat_of(MANAGER) is not None, "judged by its sessions: no heartbeat had lapsed"
        assert broker.queued_job_ids() == ids(jobs)
        assert broker.held_job_ids(WORKER) == []
        assert broker.workers(MANAGER) == []

    def test_a_worker_whose_session_is_open_is_not_reaped_when_its_manager_is_gone(
        self, broker: Broker, sessions: list[Broker]
    ) -> None:
        broker.queue_jobs(make_jobs(1))
        manager = self._manager(broker, sessions, MANAGER, {WORKER: "w-token"})
        worker = self._worker(broker, sessions, MANAGER, WORKER)
        [job] = worker.take(manager=MANAGER, worker=WORKER)
        control = self._control_group(broker, sessions)
        manager.close()  # the manager is killed; its worker lives on (it finishes, then stops)
        for session in control:
            session.close()
        reaped = self._reap_until(broker, OTHER_WORKER)
        reaped += broker.reap(owner="test", lease=0, ttl=REAP_TTL) or []
        assert WORKER not in [r.worker for r in reaped]
        assert broker.held_job_ids(WORKER) == [job.id]
        assert worker.finish_jobs(worker=WORKER, job_ids=[job.id]) == [True]

    def test_a_dead_worker_of_a_manager_whose_session_is_open_is_left_to_its_manager(
        self, broker: Broker, sessions: list[Broker]
    ) -> None:
        broker.queue_jobs(make_jobs(1))
        self._manager(broker, sessions, MANAGER, {WORKER: "w-token"})
        worker = self._worker(broker, sessions, MANAGER, WORKER)
        [job] = worker.take(manager=MANAGER, worker=WORKER)
        control = self._control_group(broker, sessions)
        worker.close()  # the worker is killed; its manager lives and settles it
        for session in control:
            session.close()
        reaped = self._reap_until(broker, OTHER_WORKER)
        reaped += broker.reap(owner="test", lease=0, ttl=REAP_TTL) or []
        assert WORKER not in [r.worker for r in reaped]
        assert broker.held_job_ids(WORKER) == [job.id]

    def test_an_open_session_does_not_keep_a_worker_whose_heartbeat_lapsed(
        self, broker: Broker, sessions: list[Broker]
    ) -> None:
        ttl = 0.3
        broker.queue_jobs(make_jobs(1))
        manager = self._manager(broker, sessions, MANAGER, {})
        worker = self._worker(broker, sessions, MANAGER, WORKER)
        manager.beat(manager=MANAGER, token=f"{MANAGER}-token", workers={WORKER: "w-token"}, ttl=ttl)
        manager.beat(manager=MANAGER, token=f"{MANAGER}-token", workers={}, ttl=LONG_TTL)
        [job] = worker.take(manager=MANAGER, worker=WORKER)
        # A stopped worker (SIGSTOP) keeps its session; its manager stopped vouching for it.
        [reaped] = [r for r in wait_reaped(broker, WORKER, ttl=ttl) if r.worker == WORKER]
        assert reaped.requeued == 1
        assert broker.queued_job_ids() == [job.id]

    def test_a_deregistered_worker_is_gone_and_its_session_ends_quietly(
        self, broker: Broker, sessions: list[Broker]
    ) -> None:
        manager = self._manager(broker, sessions, MANAGER, {WORKER: "w-token"})
        worker = self._worker(broker, sessions, MANAGER, WORKER)
        worker.deregister_worker(manager=MANAGER, worker=WORKER)
        worker.close()
        manager.deregister_manager(MANAGER)
        manager.close()
        assert broker.reap(owner="test", lease=0, ttl=REAP_TTL) == []
        assert broker.managers() == []
        assert broker.workers(MANAGER) == []
