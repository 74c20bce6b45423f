"""Hand-off under crashes: jobs queued one at a time to waiting workers (so most are handed
off by ``queue.lua`` rather than taken) while workers are killed with SIGKILL.

Every job must end finished, none lost; a job runs twice only if its worker was killed.
Real redis-server, real manager and worker processes.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import redis
from reliability_support import (
    assert_each_job_in_one_place,
    runs,
    start_manager,
    stop_manager,
    wait_for,
    worker_pids,
)

from qw_core.models import Job, State
from qw_redis import RedisBroker, keys

pytestmark = [pytest.mark.redis, pytest.mark.slow]

JOBS = 150
KILL_EVERY = 15


def test_jobs_handed_to_waiting_workers_survive_their_kill_9(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    manager = start_manager(url, "ho")
    producer = RedisBroker.from_url(url)
    chooser = random.Random(7)
    ids: list[str] = []
    kills = 0
    try:
        wait_for(lambda: len(worker_pids(manager)) == 2, what="two workers")
        client.config_resetstat()
        for n in range(JOBS):
            pids = worker_pids(manager)
            # Let a worker wait for jobs first, so that this one can be handed to it.
            wait_for(
                lambda: any(client.exists(keys.idling(f"ho.{pid}")) for pid in worker_pids(manager)),
                timeout=10,
                what="a waiting worker",
            )
            job = Job.new({"sleep": 0.002, "n": n})
            producer.queue_jobs([job])
            ids.append(job.id)
            if n % KILL_EVERY == KILL_EVERY - 1 and pids:
                os.kill(chooser.choice(pids), signal.SIGKILL)
                kills += 1
        wait_for(lambda: all(runs(record_dir)[job_id] for job_id in ids), timeout=60, what="every job to run")
    finally:
        producer.close()
        stop_manager(manager)
    # A job queued the usual way pushes a wake-up token (LPUSH, then LTRIM to the cap); one
    # handed off pushes none. Only recoveries (one per kill) push tokens here.
    wake_ups = int(client.info("commandstats").get("cmdstat_ltrim", {}).get("calls", 0))
    assert wake_ups < JOBS // 3, f"{wake_ups} wake-ups for {JOBS} jobs: few were handed off"
    ran = runs(record_dir)
    assert all(ran[job_id] >= 1 for job_id in ids)
    twice = [job_id for job_id in ids if ran[job_id] > 1]
    assert len(twice) <= kills, f"{len(twice)} jobs ran twice with {kills} workers killed"
    where = assert_each_job_in_one_place(client, ids)
    assert set(where.values()) == {"finished"}


def test_job_status_says_which_worker_runs_a_job_and_since_when(
    url: str, client: redis.Redis, record_dir: Path
) -> None:
    manager = start_manager(url, "js", num_workers=1)
    broker = RedisBroker.from_url(url)
    try:
        job = Job.new({"sleep": 30})
        before = time.time()
        broker.queue_jobs([job])
        found = wait_for(
            lambda: (s := broker.job_status(job.id)).since is not None and s,
            what="a heartbeat that reports the job running",
        )
        assert found.state is State.HELD
        assert found.worker == f"js.{worker_pids(manager)[0]}"
        assert before - 1 <= found.since <= time.time()
    finally:
        broker.close()
        manager.stop(cold=True)  # the job goes back, uncounted
        assert manager.join(30), "the manager did not stop"
