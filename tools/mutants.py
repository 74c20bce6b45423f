"""Hand-written mutants: small edits to the Lua scripts and to the paths that settle jobs,
each breaking one rule qw promises. The test suite must fail with each one applied (the
mutant is *killed*); one it passes with (a *survivor*) is a promise no test guards.

Why by hand: mutmut (``nox -s mutants`` runs it first) mutates Python functions and runs
the tests in-process, so it cannot reach the Lua scripts that run inside Redis, nor the
code that only runs in worker processes started afresh. These mutants are applied to the
files themselves, one at a time, and run the tests that drive real Redis servers and
processes. Every file is restored afterwards, also on an error or Ctrl-C.

Usage: ``python tools/mutants.py [--list] [-k TEXT]`` (``-k``: only mutants whose rule or
file holds TEXT). Exit code: the number of survivors.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
LUA = "qw_redis/src/qw_redis/lua/"

#: Test selections (pytest arguments): the in-process Redis tests, and those with processes.
REDIS = ("tests/redis", "tests/plugins/test_redis_delays_and_registry.py")
RELIABILITY = ("tests/reliability",)
CORE = ("tests/core", "tests/plugins/test_retries.py", "tests/plugins/test_cli_lifecycle.py")
EVERYTHING_RELEVANT = (*REDIS, *RELIABILITY, *CORE)


@attrs.frozen
class Mutant:
    """One edit: ``original`` (found exactly once in ``path``) becomes ``mutated``.

    :param rule: the promise the edit breaks.
    :param tests: the pytest arguments that must fail with it.
    """

    path: str
    original: str
    mutated: str
    rule: str
    tests: tuple[str, ...] = EVERYTHING_RELEVANT


MUTANTS: tuple[Mutant, ...] = (
    # -- finishing, taking -------------------------------------------------------------------
    Mutant(
        LUA + "common.lua",
        "    if redis.call('LREM', wjobs, -1, id) > 0 then",
        "    redis.call('LREM', wjobs, -1, id)\n    if true then",
        "finishing is guarded by the worker's held list",
        REDIS,
    ),
    Mutant(
        LUA + "common.lua",
        "  if keep > 0 and #finished > 0 then note_finished(finished, keep) end",
        "",
        "a job finished without a result is remembered as succeeded",
        ("tests/redis/test_contract.py",),
    ),
    Mutant(
        LUA + "common.lua",
        "    redis.pcall('ZREMRANGEBYSCORE', FINISHED, '-inf', '(' .. (tonumber(t[1]) - keep - 1))",
        "",
        "a finished job is forgotten after its time",
        ("tests/redis/test_contract.py",),
    ),
    Mutant(
        LUA + "common.lua",
        "    redis.pcall('ZREMRANGEBYRANK', FINISHED, 0, -FINISHED_CAP - 1)",
        "",
        "the finished jobs remembered stay within their cap",
        ("tests/redis/test_finished.py",),
    ),
    Mutant(
        LUA + "take.lua",
        "if unclaimed > 0 then",
        "if false then",
        "leftovers and jobs sent to the worker directly are taken first",
        REDIS,
    ),
    Mutant(
        LUA + "take.lua",
        "  if from then redis.call('HSET', origin, id, from) end",
        "  -- no origin recorded",
        "a taken job remembers the queue it came from",
        REDIS,
    ),
    Mutant(
        LUA + "take.lua",
        "if kind == 'list' or kind == 'none' then return redis.error_reply(id.err) end",
        "if true then return redis.error_reply(id.err) end",
        "a queue key of the wrong type is skipped, the others served",
        REDIS + RELIABILITY,
    ),
    Mutant(
        LUA + "take.lua",
        "  if not id then redis.call('DEL', wkey) end",
        "  -- stale tokens kept",
        "an empty queue's stale wake-up tokens are deleted",
        REDIS,
    ),
    Mutant(
        LUA + "take.lua",
        "local _, bad_delayed = promote_due(origin, 100, promoted_wakes)",
        "local bad_delayed = nil -- not promoted",
        "a take promotes due delayed jobs",
        REDIS,
    ),
    Mutant(
        LUA + "take.lua",
        "    if size > max_size then fields, marker = size, false end",
        "    -- no size limit",
        "an oversized hash never crosses the network",
        REDIS,
    ),
    Mutant(
        LUA + "take.lua",
        "  if unclaimed <= taken then redis.call('DEL', KEYS[6]) end",
        "  -- worker tokens kept",
        "a worker's own stale wake-up tokens are deleted",
        REDIS,
    ),
    Mutant(
        LUA + "take.lua",
        "  local fields = redis.pcall('HGETALL', job_key(id))",
        "  local fields = redis.call('HGETALL', job_key(id))",
        "a job key of the wrong type fails that job, not the take",
        REDIS + RELIABILITY,
    ),
    Mutant(
        LUA + "take.lua",
        "expect(origin, 'hash')",
        "-- origin unchecked",
        "a script checks key types before it writes",
        RELIABILITY,
    ),
    # -- queueing ----------------------------------------------------------------------------
    Mutant(
        LUA + "common.lua",
        "    if not job_stored(id) then\n      local entry",
        "    if true then\n      local entry",
        "queueing or delaying an id already queued, delayed or held changes nothing",
        REDIS,
    ),
    Mutant(
        LUA + "queue.lua",
        "if again then return again end",
        "-- replays run again",
        "a queueing call re-sent after a lost reply changes nothing",
        RELIABILITY,
    ),
    Mutant(
        LUA + "queue.lua",
        "wake(KEYS[2], queued - handed)",
        "wake(KEYS[2], 0)",
        "queueing a job wakes a blocked taker",
        REDIS,
    ),
    Mutant(
        LUA + "recover.lua",
        "    if line_number >= 3 then redis.pcall('SREM', idle_key(origin_of_list(line)), ARGV[1]) end",
        "    if false then redis.pcall('SREM', idle_key(origin_of_list(line)), ARGV[1]) end",
        "a recovered worker leaves the idle sets of the queues it served",
        REDIS,
    ),
    Mutant(
        LUA + "take.lua",
        "        if redis.call('EXISTS', idling_key(other)) == 0 then redis.call('SREM', idle, other) end",
        "",
        "workers gone without a recovery are swept out of the idle sets",
        REDIS,
    ),
    Mutant(
        LUA + "finish_result.lua",
        "if held == 1 then",
        "if true then",
        "a result is kept only with the finish of a job its worker still holds",
        REDIS,
    ),
    Mutant(
        LUA + "common.lua",
        "  local holder = unique_holder(lock)\n",
        "  local holder = nil\n",
        "a job whose unique key another job holds is not queued",
        REDIS,
    ),
    Mutant(
        "qw_core/worker.py",
        "            limit = max(1, min(limit, budget))\n",
        "            limit = max(1, limit)\n",
        "a worker with N jobs left to run takes no more than N",
        CORE,
    ),
    Mutant(
        "qw_core/worker.py",
        "        if done.result is not None and self.result_ttl > 0:\n",
        "        if False:\n",
        "what a target returns is kept as its job's result",
        CORE,
    ),
    Mutant(
        LUA + "queue.lua",
        "if ARGV[4] == '1' and #jobs > 0",
        "if ARGV[4] == 'x' and #jobs > 0",
        "a job queued while a worker waits is handed to it (no second round trip)",
        (*REDIS, "tests/reliability/test_handoff_crashes.py"),
    ),
    Mutant(
        LUA + "queue.lua",
        "and queue_length == 0 then",
        "then",
        "a job handed to a waiting worker never passes over one queued earlier",
        REDIS,
    ),
    Mutant(
        LUA + "queue.lua",
        "  redis.call('DEL', idling_key(w))\n",
        "",
        "a waiting worker is handed one job per wait",
        REDIS,
    ),
    Mutant(
        LUA + "take.lua",
        "redis.call('DEL', KEYS[7], KEYS[8])",
        "redis.call('DEL', KEYS[7])",
        "a take drops the hand-offs it hands out as leftovers (none runs twice)",
        REDIS,
    ),
    Mutant(
        LUA + "recover.lua",
        "redis.call('DEL', KEYS[6], idling_key(ARGV[1]), handoff_key(ARGV[1]))",
        "redis.call('DEL', KEYS[6])",
        "no job is handed to a worker once it is recovered",
        REDIS,
    ),
    Mutant(
        "qw_redis/src/qw_redis/consuming.py",
        "            jobs = take((), held, limit, waits=waits)\n",
        "            jobs = take((), held, limit, waits=True)\n",
        "a take never returns with the worker registered as waiting",
        REDIS,
    ),
    Mutant(
        LUA + "queue.lua",
        "expect(KEYS[1], 'list')",
        "-- queue unchecked",
        "nothing is queued onto a key that is not a list",
        RELIABILITY,
    ),
    Mutant(
        LUA + "queue_delayed.lua",
        "if again then return again end",
        "-- replays run again",
        "a delaying call re-sent after a lost reply changes nothing",
        RELIABILITY,
    ),
    Mutant(
        LUA + "queue_delayed.lua",
        "  wake(wkey, 1)",
        "  -- no wake-up",
        "a delayed job wakes a blocked taker to learn its due time",
        REDIS,
    ),
    Mutant(
        LUA + "queue_delayed.lua", "due + (i - 1) / 1000000", "due", "a delayed batch keeps its order", REDIS
    ),
    Mutant(
        LUA + "common.lua",
        "  if at and string.sub(last, 1, at - 1) == seq then",
        "  if at and string.sub(last, 1, at - 1) ~= seq then",
        "only the same call is recognised as a replay",
        REDIS + RELIABILITY,
    ),
    # -- failing, retrying, releasing --------------------------------------------------------
    Mutant(
        LUA + "fail.lua",
        "  if redis.call('LREM', KEYS[1], -1, id) == 0 then\n    done[#done + 1] = 0\n  else",
        "  redis.call('LREM', KEYS[1], -1, id)\n  if false then\n    done[#done + 1] = 0\n  else",
        "failing is guarded by the held list",
        REDIS,
    ),
    Mutant(
        LUA + "fail.lua",
        "local at = now()",
        "local at = now() + 31 * 86400",
        "the failed registry goes by one clock",
        REDIS + RELIABILITY,
    ),
    Mutant(
        LUA + "fail.lua",
        "  if excess > 0 then drop(",
        "  if false then drop(",
        "the failed registry keeps at most max_count",
        REDIS,
    ),
    Mutant(
        LUA + "fail.lua",
        "if ARGV[1] ~= '' then",
        "if false then",
        "the failed registry drops entries older than max_age",
        REDIS,
    ),
    Mutant(
        LUA + "fail.lua",
        "    if ARGV[i + 3] == '1' then\n      keep_job(id)",
        "    if false then\n      keep_job(id)",
        "an unreadable job's hash is kept to requeue",
        REDIS + RELIABILITY,
    ),
    Mutant(
        LUA + "common.lua",
        "  local m = redis.call('HGET', MANAGER_OF, w)",
        "  local m = nil",
        "a job its worker never took goes back to the manager the worker registered under",
        REDIS,
    ),
    Mutant(
        LUA + "release.lua",
        "expect(MANAGER_OF, 'hash')",
        "-- no check",
        "a qw:manager-of of the wrong type fails a settle call before anything is written",
        REDIS,
    ),
    Mutant(
        LUA + "fail.lua",
        "'failure', ARGV[i + 2], 'origin', from)",
        "'failure', ARGV[i + 2])  -- origin forgotten",
        "a failed job goes back to its own queue",
        REDIS,
    ),
    Mutant(
        LUA + "fail.lua",
        "redis.call('HDEL', RECOVERIES, id)  -- its crash count",
        "-- count kept",
        "a failed job's crash count is cleared",
        REDIS,
    ),
    Mutant(
        LUA + "retry.lua",
        "if redis.call('LREM', KEYS[1], -1, id) == 0 then return 0 end",
        "redis.call('LREM', KEYS[1], -1, id)",
        "retrying is guarded by the held list",
        REDIS,
    ),
    Mutant(
        LUA + "retry.lua",
        "if delay > 0 then\n  redis.call('HDEL', KEYS[3], id)",
        "if false then\n  redis.call('HDEL', KEYS[3], id)",
        "a retry waits its back-off",
        REDIS,
    ),
    Mutant(
        LUA + "retry.lua",
        "  local _, wkey = queue_of(m)\n  wake(wkey, 1)",
        "  -- no wake-up",
        "a delayed retry wakes a blocked taker",
        REDIS,
    ),
    Mutant(
        LUA + "release.lua",
        "for i = #ARGV, 1, -1 do",
        "for i = 1, #ARGV do",
        "released jobs keep their order at the front",
        REDIS,
    ),
    # -- recovery ----------------------------------------------------------------------------
    Mutant(
        LUA + "recover.lua",
        "  if redis.call('EXISTS', KEYS[6]) == 1 then return {0, held, 1} end",
        "  -- no heartbeat check",
        "the reaper checks the heartbeat in its atomic step",
        RELIABILITY,
    ),
    Mutant(
        LUA + "recover.lua",
        "  if held == 0 and redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return {0, 0, 1} end",
        "  -- gone or dead alike",
        "a worker that deregistered is gone, not dead",
        RELIABILITY,
    ),
    Mutant(
        LUA + "recover.lua",
        "(counted == '' or counted == id)",
        "true",
        "only the job a worker died running is counted",
        REDIS + RELIABILITY,
    ),
    Mutant(
        LUA + "recover.lua",
        "redis.call('HINCRBY', KEYS[7], id, 1) > limit",
        "redis.call('HINCRBY', KEYS[7], id, 1) >= limit",
        "a job is put back max_recoveries times",
        REDIS + RELIABILITY,
    ),
    Mutant(
        LUA + "recover.lua",
        "for i = #ids, 1, -1 do",
        "for i = 1, #ids do",
        "recovered jobs go back in the order they were taken",
        REDIS,
    ),
    Mutant(
        LUA + "recover.lua",
        "      add(back, KEYS[4], id)",
        "      add(front, KEYS[4], id)",
        "untaken direct jobs go to the back of the manager's queue",
        REDIS,
    ),
    Mutant(
        LUA + "recover.lua",
        "redis.call('SREM', KEYS[2], ARGV[1])",
        "-- still a member",
        "a recovered worker leaves its manager's workers",
        REDIS + RELIABILITY,
    ),
    Mutant(
        LUA + "recover.lua",
        "    if pushable(q) then",
        "    if true then",
        "a job whose queue is not a list is parked, not lost",
        RELIABILITY,
    ),
    # -- moving delayed jobs, putting back ---------------------------------------------------
    Mutant(
        LUA + "common.lua",
        "        redis.call('ZREM', dkey, id)\n",
        "",
        "a due job moves exactly once",
        REDIS,
    ),
    Mutant(
        "qw_redis/src/qw_redis/consuming.py",
        "                time.sleep(min(due_in, DUE_STEP))",
        "                time.sleep(due_in)",
        "a job queued in the last tick before a due time is seen within a step",
        ("tests/plugins/test_redis_delays_and_registry.py",),
    ),
    Mutant(
        LUA + "common.lua",
        "  redis.call('ZADD', DUE, 'LT', soonest, m)",
        "  redis.call('ZADD', DUE, soonest, m)",
        "qw:due keeps each queue's soonest due time",
        REDIS,
    ),
    Mutant(
        LUA + "common.lua",
        "      moved = moved + #due\n      refresh_due(m, dkey)",
        "      moved = moved + #due",
        "qw:due moves on to a queue's next due time once its soonest job moved",
        REDIS,
    ),
    Mutant(
        LUA + "common.lua",
        "    adopt_legacy(origin, limit)",
        "    -- not adopted",
        "jobs delayed before 1.0 are sorted into their queues' sets",
        REDIS,
    ),
    Mutant(
        "qw_redis/src/qw_redis/producing.py",
        "        full = len(batch) == QUEUE_BATCH or fields + more_fields > QUEUE_BATCH_FIELDS",
        "        full = len(batch) == QUEUE_BATCH",
        "a queueing script call stores a bounded number of hash fields",
        REDIS,
    ),
    Mutant(
        "qw_core/status.py",
        '        found += [Busy(job_id) for job_id in self._ids("failing") if job_id not in running]',
        "        pass",
        "a failure not written yet is in hand: a worker that cannot write it has its job counted",
        ("tests/reliability/test_deferred_failures.py", "tests/core/test_status.py"),
    ),
    Mutant(
        "qw_core/worker.py",
        "        self._write_failures(batch)  # then the take finishes the batch's succeeded jobs",
        "        pass",
        "a batch's failures are written before the next take",
        ("tests/core/test_worker_batching.py",),
    ),
    Mutant(
        LUA + "requeue_failed_batch.lua",
        "  if score and tonumber(score) == tonumber(job[2]) and not job_stored(id)"
        " and (not holder or holder == id) then",
        "  if score and not job_stored(id) and (not holder or holder == id) then",
        "requeue --all never requeues a job that failed again after its record was read",
        (*REDIS, "tests/cli"),
    ),
    Mutant(
        LUA + "requeue_failed_batch.lua",
        "  if score and tonumber(score) == tonumber(job[2]) and not job_stored(id)"
        " and (not holder or holder == id) then",
        "  if score and tonumber(score) == tonumber(job[2]) and (not holder or holder == id) then",
        "requeue --all never overwrites a live job with the same id",
        (*REDIS, "tests/cli"),
    ),
    Mutant(
        LUA + "requeue_failed_batch.lua",
        "local again = replayed_text(KEYS[2], ARGV[1])\nif again then return again end",
        "local again = nil",
        "a requeue batch re-sent after a lost reply changes nothing",
        (*REDIS, "tests/cli"),
    ),
    Mutant(
        LUA + "purge_failed_upto.lua",
        "local again = replayed(KEYS[2], ARGV[1])\nif again then return again end",
        "local again = nil",
        "a purge batch re-sent after a lost reply changes nothing",
        (*REDIS, "tests/cli"),
    ),
    Mutant(
        LUA + "purge_failed_upto.lua",
        "redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))",
        "redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '+inf', 'LIMIT', 0, tonumber(ARGV[3]))",
        "purge --all keeps the jobs that failed after it started",
        (*REDIS, "tests/cli"),
    ),
    Mutant(
        "qw_core/tracebacks.py",
        "        if current.__cause__ is not None:",
        "        if False:",
        "a failed job's traceback keeps the exception it was raised from",
        ("tests/core/test_tracebacks.py",),
    ),
    Mutant(
        LUA + "common.lua",
        "  if front then\n    redis.call('RPUSH', q, id)",
        "  if not front then\n    redis.call('RPUSH', q, id)",
        "put back at the front or the back",
        REDIS,
    ),
    Mutant(
        LUA + "common.lua",
        "  if not pushable(q) then\n    park(id, m, q)",
        "  if false then\n    park(id, m, q)",
        "a job whose queue is not a list is parked, not lost",
        RELIABILITY,
    ),
    Mutant(
        LUA + "common.lua", "  if n > WAKE_CAP then n = WAKE_CAP end", "", "wake-up tokens are capped", REDIS
    ),
    # -- membership and the registry ---------------------------------------------------------
    Mutant(
        LUA + "beat.lua",
        "  if previous ~= token then",
        "  if false then",
        "a heartbeat reports one that lapsed or was someone else's",
        REDIS,
    ),
    Mutant(
        LUA + "beat.lua",
        "  redis.call('SADD', KEYS[3], name)",
        "  -- not registered",
        "a reaped worker that beats again is registered again",
        REDIS,
    ),
    Mutant(
        LUA + "forget_manager.lua",
        "if redis.call('EXISTS', KEYS[3]) == 1 or",
        "if",
        "a live manager is never forgotten",
        REDIS + RELIABILITY,
    ),
    Mutant(
        LUA + "requeue_failed.lua",
        "if job_stored(id) then return remember(KEYS[7], ARGV[1], 0) end",
        "-- live job overwritten",
        "a requeue never overwrites a live job's data",
        REDIS,
    ),
    Mutant(
        LUA + "requeue_failed.lua",
        "if again then return again end",
        "-- replays run again",
        "a requeue re-sent after a lost reply changes nothing",
        RELIABILITY,
    ),
    Mutant(
        LUA + "requeue_failed.lua",
        "if redis.call('EXISTS', KEYS[4]) == 1 then",
        "if false then",
        "an unreadable job is restored as it was",
        REDIS + RELIABILITY,
    ),
    Mutant(
        LUA + "purge_failed.lua",
        "  if redis.call('ZREM', KEYS[1], id) > 0 then",
        "  redis.call('ZREM', KEYS[1], id)\n  if true then",
        "purging counts what it deleted",
        REDIS,
    ),
    # -- the worker ---------------------------------------------------------------------------
    Mutant(
        "qw_core/execution.py",
        "        except BaseException as exc:  # SystemExit from a target fails its job like any error",
        "        except Exception as exc:  # SystemExit from a target fails its job like any error",
        "a target's SystemExit fails its job, not the worker",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/execution.py",
        "        if os.getpid() != self.pid:\n            exit_forked_child(job, error)\n        if dead",
        "        if False:\n            exit_forked_child(job, error)\n        if dead",
        "a forked child never settles its parent's job",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/worker.py",
        "        if self.clock() - batch.confirmed_at > self.finish_delay:",
        "        if False:",
        "a resumed worker checks it still holds its batch",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/worker.py",
        "        if status is not None:  # its manager finishes it if we die first",
        "        if False:",
        "a worker reports what succeeded and is not finished",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/worker.py",
        "        if (batch.finished or batch.failing) and self.clock() - batch.deferred_since >= self.finish_delay:",  # noqa: E501
        "        if False:",
        "a slow job's success is finished at once",
        CORE,
    ),
    Mutant(
        "qw_core/worker.py",
        "                if errors >= ERROR_ATTEMPTS or give_up() or self.stopping:",
        "                if give_up() or self.stopping:",
        "a job that cannot be settled is not held for ever",
        CORE + RELIABILITY,
    ),
    Mutant(
        "qw_core/worker.py",
        "                self._settled = completed",
        "                self._settled = True",
        "a worker that stops on an error stays registered",
        CORE + RELIABILITY,
    ),
    Mutant(
        "qw_core/worker.py",
        "        if status is not None:\n            status.done(done.slot)",
        "        if False:\n            status.done(done.slot)",
        "a worker between jobs is blamed for nothing",
        (*CORE, *RELIABILITY),
    ),
    # -- jobs in flight at once (qw run --concurrency) ----------------------------------------
    Mutant(
        "qw_core/worker.py",
        "                held=held,\n",
        "                held=[],\n",
        "a take never hands out again the jobs in flight",
        (*CORE, *RELIABILITY),
    ),
    Mutant(
        "qw_core/manager.py",
        "        blame = in_hand[0] if len(exited.in_hand) == 1 and in_hand else None",
        "        blame = in_hand[0] if in_hand else None",
        "with several jobs in hand at a crash, none is counted",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/worker.py",
        "            if job.suspect and self._flights:",
        "            if False:",
        "a suspect runs alone",
        CORE,
    ),
    Mutant(
        LUA + "recover.lua",
        "    if suspects[id] then redis.call('SADD', SUSPECTS, id) end\n",
        "",
        "jobs in hand beside others at a crash are put back as suspects",
        REDIS,
    ),
    Mutant(
        LUA + "take.lua",
        "  if suspects and redis.call('SISMEMBER', SUSPECTS, id) == 1 then source = '!' .. source end",
        "",
        "a take hands out a suspect as one",
        REDIS,
    ),
    Mutant(
        "qw_core/execution.py",
        "    done, _ = await asyncio.wait({task}, timeout=limit)",
        "    done, _ = await asyncio.wait({task}, timeout=None)",
        "an async job past its limit is cancelled",
        CORE,
    ),
    Mutant(
        "qw_core/worker.py",
        "            if not deadline or deadline > now or run in self._abandoned:",
        "            if True:",
        "a job on a thread past its limit is settled as timed out",
        CORE,
    ),
    Mutant(
        "qw_core/worker.py",
        "            if done.run in self._abandoned:",
        "            if False:",
        "the late end of a run settled as timed out settles nothing",
        CORE,
    ),
    Mutant(
        "qw_core/execution.py",
        "            if inspect.isawaitable(returned):\n                _discard(returned)",
        "            if False:\n                _discard(returned)",
        "an awaitable from a plain target fails its job, never counts as run",
        CORE,
    ),
    Mutant(
        "qw_core/worker.py",
        "                self._nudger.nudge(self.name)",
        "                pass",
        "a job that completes ends its worker's wait for new jobs",
        CORE,
    ),
    # -- settling decisions -------------------------------------------------------------------
    Mutant(
        "qw_core/settle.py",
        "    if decision is None:\n        return Decision.fail()",
        "    if decision is None:\n        return Decision.drop()",
        "no answer means fail, never drop",
        CORE,
    ),
    Mutant(
        "qw_core/settle.py",
        "    if not isinstance(decision, Decision):",
        "    if False:",
        "a plugin's nonsense answer fails the job",
        RELIABILITY,
    ),
    # -- the manager --------------------------------------------------------------------------
    Mutant(
        "qw_core/manager.py",
        "        if exited.successes:",
        "        if False:",
        "an exited worker's successes are finished, not run again",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/manager.py",
        "        in_hand = tuple(status.in_hand()) if status is not None and not cannot_start else ()",
        "        in_hand = ()",
        "a job that kills its worker is failed as crashed",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/manager.py",
        "        cannot_start = status is not None and status.could_not_start",
        "        cannot_start = slot.process.exitcode == 78",
        "an exit code never stops the manager",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/manager.py",
        "            if not self._unsettled:\n                try:",
        "            if True:\n                try:",
        "a manager deregisters only once every worker is settled",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/manager.py",
        "        self._finish_for_stopped()\n",
        "",
        "a stopped worker's successes are finished by its manager",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/manager.py",
        "        same_run = slot.status.seq(running.slot) == running.seq  # not a job that started since",
        "        same_run = True",
        "a job that ended in time is not failed as timed out",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/manager.py", "        slot.killed = True\n", "", "a cold stop counts no crash", RELIABILITY
    ),
    Mutant(
        "qw_core/liveness.py",
        "        return not self.troubled and self.beat_is_fresh",
        "        return not self.troubled",
        "no reaping while the manager's own beat is stale",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/liveness.py",
        "            if outage:\n                self.note_trouble()",
        "            if False:\n                self.note_trouble()",
        "during an outage nobody is judged dead",
        ("tests/core/test_backoff.py", *RELIABILITY),
    ),
    Mutant(
        "qw_core/liveness.py",
        "        if backoff.failures or time.monotonic() - started > self.settings.heartbeat:",
        "        if backoff.failures:",
        "after the broker stalled past the TTL, nobody is judged dead for a TTL",
        ("tests/reliability/test_redis_faults.py",),
    ),
    Mutant(
        "qw_core/process.py",
        "    signal.signal(signal.SIGQUIT, signal.SIG_IGN)",
        "    signal.signal(signal.SIGQUIT, signal.SIG_DFL)",
        "Ctrl-\\ to the group counts no crash",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/process.py",
        "    stop.watch(worker)\n",
        "    stop.worker = worker\n",
        "a stop asked for while a worker starts is not lost",
        RELIABILITY,
    ),
    Mutant(
        "qw_core/process.py",
        "    os._exit(code)",
        "    sys.exit(code)",
        "a thread a target left behind does not keep a worker alive",
        RELIABILITY,
    ),
    # -- the job's two keys (its data hash, and qw's marker beside it) --------------------------
    Mutant(
        LUA + "common.lua",
        "  redis.call('DEL', job_key(id), marker_key(id))",
        "  redis.call('DEL', job_key(id))",
        "a job that ends leaves no marker behind",
        REDIS,
    ),
    Mutant(
        LUA + "common.lua",
        "    redis.call('HSET', kept, V1_MARKER, marker)",
        "    -- marker dropped",
        "an unreadable job is kept with its marker, to requeue as it was",
        REDIS + RELIABILITY,
    ),
    Mutant(
        LUA + "sweep_markers.lua",
        "(marker.keys == nil or #marker.keys > 0)",
        "true",
        "the sweep never drops the marker of a job with no hash",
        REDIS,
    ),
    Mutant(
        LUA + "sweep_markers.lua",
        "redis.call('EXISTS', job_key(id)) == 0",
        "true",
        "the sweep never drops the marker of a live job",
        REDIS,
    ),
    Mutant(
        "qw_redis/src/qw_redis/codec.py",
        "        if missing:\n",
        "        if False:\n",
        "a job whose hash lost a field is invalid, never run with less",
        REDIS,
    ),
    # -- reading jobs back --------------------------------------------------------------------
    Mutant(
        "qw_redis/src/qw_redis/codec.py",
        "        if not fields:\n            raise InvalidJob(",
        "        if False:\n            raise InvalidJob(",
        "a job without its hash or marker is not run with {}",
        REDIS,
    ),
    Mutant(
        "qw_redis/src/qw_redis/codec.py",
        "    _check_text(job_id, fields)\n",
        "",
        "bytes that are not UTF-8 make a job invalid",
        REDIS + RELIABILITY,
    ),
    Mutant(
        "qw_core/encoding.py",
        "_STRICT = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)",
        "_STRICT = json.JSONDecoder()",
        "what is decoded can be stored again",
        (*REDIS, "tests/core/test_encoding.py", "tests/postgres/test_postgres_unreadable.py"),
    ),
)


#: Seconds a mutant's tests may run; tests that hang past it count as failing (killed).
TIMEOUT = 900


def run(mutant: Mutant) -> bool:
    """Apply ``mutant``, run its tests, restore the file; whether the tests failed (killed),
    or hung past :data:`TIMEOUT` (their processes are killed)."""
    path = ROOT / mutant.path
    source = path.read_text(encoding="utf-8")
    found = source.count(mutant.original)
    if found != 1:
        raise SystemExit(
            f"{mutant.path}: the text to mutate is found {found} times, not once:\n{mutant.original}"
        )
    path.write_text(source.replace(mutant.original, mutant.mutated), encoding="utf-8")
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "3", "-p", "no:cacheprovider"]
    argv += ["-m", "not serial", *mutant.tests]
    try:
        tests = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            return tests.wait(timeout=TIMEOUT) != 0
        except subprocess.TimeoutExpired:
            os.killpg(tests.pid, signal.SIGKILL)  # pytest, its workers, and what they started
            tests.wait()
            print(f"     (the tests hung for {TIMEOUT} s: counted as failing)", flush=True)
            return True
    finally:
        path.write_text(source, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("-k", default="", help="only mutants whose rule or file holds this text")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.k in m.rule or args.k in m.path]
    if args.list:
        for n, mutant in enumerate(chosen, 1):
            print(f"{n:3}  {mutant.path}: {mutant.rule}")
        return 0
    survivors = []
    for n, mutant in enumerate(chosen, 1):
        started = time.monotonic()
        killed = run(mutant)
        print(
            f"{n:3}/{len(chosen)} {'killed  ' if killed else 'SURVIVED'} {time.monotonic() - started:5.0f}s  "
            f"{mutant.path}: {mutant.rule}",
            flush=True,
        )
        if not killed:
            survivors.append(mutant)
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} mutants killed, {len(survivors)} survived")
    return len(survivors)


if __name__ == "__main__":
    sys.exit(main())
