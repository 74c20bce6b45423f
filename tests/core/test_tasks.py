"""Task functions (qw_core.tasks): registering, queueing checked calls, the wire format,
and running a router as a target through a real worker (run_jobs) on the memory broker."""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any, cast

import pytest

from qw_core.broker import Producer
from qw_core.errors import (
    ConfigurationError,
    DuplicateTask,
    InvalidTaskCall,
    JobTimeout,
    NoResult,
    TargetNotRun,
    UnknownTask,
)
from qw_core.execution import is_async, slots_for
from qw_core.models import Job, Outcome, State
from qw_core.plugins import PluginConfig
from qw_core.taskcalls import TaskCall, parse_task_call
from qw_core.tasks import Router, TaskHandle
from qw_core.testing import MemoryBroker, run_jobs
from qw_core.worker import current_job


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()


@pytest.fixture
def router(broker: MemoryBroker) -> Router:
    return Router(broker=broker)


def nothing_queued(broker: MemoryBroker) -> bool:
    return broker.queued_job_ids() == [] and broker.delayed_job_ids() == []


# -- registering -----------------------------------------------------------------------


def test_a_task_is_named_module_colon_qualname_by_default(router: Router) -> None:
    @router.task
    def resize(image: str) -> None: ...

    assert resize.name == f"{__name__}:test_a_task_is_named_module_colon_qualname_by_default.<locals>.resize"
    assert router.tasks == {resize.name: resize}


def test_a_task_may_be_given_a_name(router: Router) -> None:
    @router.task(name="images.resize")
    def resize(image: str) -> None: ...

    assert resize.name == "images.resize"
    assert list(router.tasks) == ["images.resize"]


def test_calling_a_task_runs_the_function_here_and_queues_nothing(
    router: Router, broker: MemoryBroker
) -> None:
    @router.task
    def add(x: int, y: int = 0) -> int:
        return x + y

    assert add(2, y=3) == 5
    assert add.__name__ == "add", "the task looks like its function"
    assert nothing_queued(broker)


def test_a_second_task_of_the_same_name_is_refused(router: Router) -> None:
    @router.task(name="send")
    def send(to: str) -> None: ...

    with pytest.raises(DuplicateTask, match=r"a task named 'send' is registered on this router already"):

        @router.task(name="send")
        def send_again(to: str) -> None: ...

    def make() -> Any:
        def same(x: int) -> None: ...

        return same

    router.task(make())
    with pytest.raises(DuplicateTask, match="give one of them another name"):
        router.task(make())  # the same module:qualname
    assert router.tasks["send"] is send


def test_a_task_of_a_script_run_as_main_needs_a_name(router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    def resize(image: str) -> None: ...

    resize.__module__ = "__main__"
    script = types.ModuleType("__main__")
    script.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", script)
    with pytest.raises(ConfigurationError, match=r"run as __main__.*give it name=\.\.\."):
        router.task(resize)
    assert router.tasks == {}
    assert router.task(name="resize")(resize).name == "resize"


def test_a_task_of_a_module_run_with_python_m_is_named_after_that_module(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    def resize(image: str) -> None: ...

    resize.__module__ = "__main__"
    script = types.ModuleType("__main__")
    script.__spec__ = types.SimpleNamespace(name="myapp.tasks")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert (
        router.task(resize).name
        == "myapp.tasks:test_a_task_of_a_module_run_with_python_m_is_named_after_that_module.<locals>.resize"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": {"max_retrys": 3}}, r"retry has unknown keys \['max_retrys'\]"),
        ({"retry": -1}, "max_retries must be a whole number"),
        ({"retry": True}, "retry must be a number of retries or RetryPolicy fields"),
        ({"timeout": 0}, "timeout must be a positive number of seconds"),
        ({"delay": -1}, "delay must be a finite number of seconds, 0 or more"),
        ({"delay": float("inf")}, "delay must be a finite number"),
        ({"queue": ""}, "queue must be a queue's name"),
        ({"name": ""}, "a task's name must be a non-empty string"),
    ],
)
def test_invalid_task_settings_are_refused_when_the_task_is_defined(
    router: Router, options: dict[str, Any], message: str
) -> None:
    def f() -> None: ...

    with pytest.raises(ConfigurationError, match=message):
        router.task(**options)(f)
    assert router.tasks == {}


# -- queueing --------------------------------------------------------------------------


def test_enqueue_queues_the_documented_job_data(router: Router, broker: MemoryBroker) -> None:
    @router.task(name="resize")
    def resize(image: str, width: int = 100, *tags: str, **extra: Any) -> None: ...

    handle = resize.enqueue("cat.png", 50, "a", "b", crop={"x": [1, 2.5, None, True]})
    job = broker.get_job(handle.id)
    assert job is not None
    assert job.data == {
        "task": "resize",
        "args": ["cat.png", 50, "a", "b"],
        "kwargs": {"crop": {"x": [1, 2.5, None, True]}},
    }
    assert (handle.task, handle.queue, handle.broker) == ("resize", None, broker)
    assert job.meta == {}
    only_kwargs = broker.get_job(resize.enqueue(image="dog.png").id)
    assert only_kwargs is not None
    assert only_kwargs.data == {"task": "resize", "kwargs": {"image": "dog.png"}}, "empty parts left out"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, r"task resize takes \(image, width=100\): missing a required argument: 'image'"),
        (("a", 1, 2), {}, "too many positional arguments"),
        (("a",), {"height": 3}, "got an unexpected keyword argument 'height'"),
        (({"a", "b"},), {}, r"argument image is a set"),
        (("a",), {"width": float("nan")}, r"argument width is nan, which JSON cannot hold"),
        (("a", (1, 2)), {}, r"argument width is a tuple"),
        ((["ok", {"deep": [1, object()]}],), {}, r"argument image\[1\]\['deep'\]\[1\] is an object"),
        (({1: "x"},), {}, r"argument image has the key 1 \(int\): JSON keys are strings"),
        # Refused by the backend once (a ValueError or InvalidJob, not this error), if at all:
        (("half \ud800",), {}, r"argument image holds a lone surrogate, not text"),
        (({"\udc80": 1},), {}, r"argument image has a key '\\udc80' with a lone surrogate"),
        (("a", [10**5000]), {}, r"argument width\[0\] is an int too long to write as text"),
    ],
)
def test_a_bad_call_is_refused_at_enqueue_time_and_nothing_is_queued(
    router: Router, broker: MemoryBroker, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    @router.task(name="resize")
    def resize(image: str, width: int = 100) -> None: ...

    with pytest.raises(InvalidTaskCall, match=message):
        resize.enqueue(*args, **kwargs)
    assert nothing_queued(broker)


def test_variadic_arguments_are_checked_one_by_one(router: Router, broker: MemoryBroker) -> None:
    @router.task(name="log")
    def log(*lines: str, **fields: Any) -> None: ...

    with pytest.raises(InvalidTaskCall, match=r"argument lines\[1\] is a bytes"):
        log.enqueue("ok", b"bytes")
    with pytest.raises(InvalidTaskCall, match=r"argument when is a datetime"):
        log.enqueue("ok", when=__import__("datetime").datetime.now())
    assert nothing_queued(broker)


def test_a_router_without_a_broker_says_how_to_give_one(broker: MemoryBroker) -> None:
    router = Router()

    @router.task(name="t")
    def t() -> None: ...

    with pytest.raises(ConfigurationError, match=r"no broker to queue on: give Router\(broker=\.\.\.\)"):
        t.enqueue()
    handle = t.options(broker=broker).enqueue()
    assert broker.queued_job_ids() == [handle.id]
    router.broker = broker
    assert t.enqueue().broker is broker


def test_a_broker_factory_is_opened_once_per_thread(broker: MemoryBroker) -> None:
    opened: list[str] = []

    def factory() -> MemoryBroker:
        opened.append(threading.current_thread().name)
        return broker

    router = Router(broker=factory)

    @router.task(name="t")
    def t() -> None: ...

    t.enqueue()
    t.enqueue()
    other = threading.Thread(target=t.enqueue, name="other")
    other.start()
    other.join()
    assert opened == [threading.current_thread().name, "other"]
    assert len(broker.queued_job_ids()) == 3


def test_task_settings_and_call_options_go_into_the_job(router: Router, broker: MemoryBroker) -> None:
    @router.task(name="mail", queue="emails", retry={"max_retries": 5, "backoff": 2}, timeout=30)
    def mail(to: str) -> None: ...

    job = mail.job("a@example.com")
    assert job.queue == "emails"
    assert dict(job.meta) == {"retry": {"max_retries": 5, "backoff": 2}, "timeout": 30}
    other = mail.options(queue="default", retry=1, timeout=2.5).options(retry={"jitter": 0}).job("b")
    assert other.queue is None, "'default' is the shared queue"
    assert dict(other.meta) == {"retry": {"max_retries": 1, "backoff": 2, "jitter": 0}, "timeout": 2.5}
    assert dict(mail.job("c").meta)["timeout"] == 30, "options() left the task itself alone"


def test_a_delay_keeps_the_call_waiting(router: Router, broker: MemoryBroker) -> None:
    @router.task(name="later", delay=60)
    def later() -> None: ...

    first = later.enqueue()
    second = later.options(delay=120).enqueue()
    now = later.options(delay=0).enqueue()
    assert set(broker.delayed_job_ids()) == {first.id, second.id}
    assert broker.queued_job_ids() == [now.id]


def test_run_jobs_runs_the_calls_of_the_queues_it_is_told_to_serve(
    router: Router, broker: MemoryBroker
) -> None:
    queues_seen: list[str | None] = []

    @router.task(name="mail", queue="emails")
    def mail(to: str) -> None:
        job = current_job()
        assert job is not None
        queues_seen.append(job.queue)

    emailed = mail.enqueue("ada@example.com")
    shared = mail.options(queue="default").enqueue("bob@example.com")
    [first] = run_jobs(broker, router)  # the shared queue alone, by default
    assert first.job.id == shared.id
    assert broker.queued_job_ids(queue="emails") == [emailed.id], "not served by default"
    [ran] = run_jobs(broker, router, queues=["emails"])
    assert (ran.job.id, ran.outcome) == (emailed.id, Outcome.SUCCEEDED)
    assert queues_seen == [None, "emails"]


# -- the wire format -------------------------------------------------------------------


def test_a_task_call_needs_only_its_name_and_reads_json_text_arguments() -> None:
    assert parse_task_call({"task": "t"}) == TaskCall("t", [], {})
    assert parse_task_call({"task": "t", "args": "[1, 2]", "kwargs": '{"a": null}'}) == TaskCall(
        "t", [1, 2], {"a": None}
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["t"], r"job data is not a task call .*: it is an array"),
        ("resize", "it is a string"),
        ({"task": "t", "queue": "x"}, "unknown keys 'queue'"),
        ({"args": []}, "'task' must name a task, not None"),
        ({"task": 3}, "'task' must name a task, not 3"),
        ({"task": "t", "args": {"a": 1}}, "'args' must be a JSON array, not an object"),
        ({"task": "t", "kwargs": [1]}, "'kwargs' must be a JSON object, not an array"),
        ({"task": "t", "args": "[1,"}, "'args' is a string that is not JSON"),
    ],
)
def test_job_data_that_is_not_a_task_call_is_refused_clearly(data: Any, message: str) -> None:
    with pytest.raises(InvalidTaskCall, match=message):
        parse_task_call(data)


# -- running: the router is the target ---------------------------------------------------


def test_a_router_of_plain_tasks_runs_them_in_the_workers_thread(
    router: Router, broker: MemoryBroker
) -> None:
    seen: list[tuple[str, int, str]] = []

    @router.task(name="add")
    def add(x: int, y: int = 0) -> int:
        job = current_job()
        assert job is not None
        seen.append((job.id, x + y, threading.current_thread().name))
        return x + y

    assert not is_async(router)
    assert slots_for(router, None) == 1, "a plain target's default: one job at a time"
    handles = [add.enqueue(1, y=2), add.enqueue(5)]
    runs = run_jobs(broker, router)
    assert [run.outcome for run in runs] == [Outcome.SUCCEEDED] * 2
    here = threading.current_thread().name  # run_jobs runs its worker in the calling thread
    assert seen == [(handles[0].id, 3, here), (handles[1].id, 5, here)]


def test_a_router_with_an_async_task_runs_on_an_event_loop_and_plain_tasks_on_threads(
    router: Router, broker: MemoryBroker
) -> None:
    seen: dict[str, tuple[str | None, str, bool]] = {}

    @router.task(name="plain")
    def plain(label: str) -> None:
        job = current_job()
        seen[label] = (job and job.id, threading.current_thread().name, _on_loop())

    assert not is_async(router)

    @router.task(name="coro")
    async def coro(label: str) -> None:
        await asyncio.sleep(0)
        job = current_job()
        seen[label] = (job and job.id, threading.current_thread().name, _on_loop())

    assert is_async(router)
    assert slots_for(router, None) == 100, "an async target's default"
    a, b = plain.enqueue("p"), coro.enqueue("c")
    runs = run_jobs(broker, router)
    assert sorted(run.outcome.value for run in runs) == ["succeeded", "succeeded"]
    p_job, p_thread, p_on_loop = seen["p"]
    c_job, c_thread, c_on_loop = seen["c"]
    assert (p_job, c_job) == (a.id, b.id), "current_job() is each task's own"
    assert p_thread.startswith("qw-task"), "the plain task ran on a thread of the router's"
    assert not p_on_loop
    assert c_thread == "qw-event-loop", "the async task ran on the worker's event loop"
    assert c_on_loop


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_a_plain_task_does_not_block_the_event_loop(router: Router, broker: MemoryBroker) -> None:
    # The plain task waits for an event only the async task sets: on the loop's own
    # thread it would wait for ever (the run would hit its time limit).
    ready = threading.Event()

    @router.task(name="waiter", timeout=10)
    def waiter() -> None:
        assert ready.wait(10), "the async task never ran beside the plain one"

    @router.task(name="setter")
    async def setter() -> None:
        await asyncio.sleep(0.05)
        ready.set()

    waiter.enqueue()
    setter.enqueue()
    runs = run_jobs(broker, router)
    assert [run.error for run in runs] == [None, None]


def test_an_unknown_task_fails_its_job_into_the_failed_registry(router: Router, broker: MemoryBroker) -> None:
    @router.task(name="images.resize")
    def resize(image: str) -> None: ...

    job_id = broker.queue_job(Job.new({"task": "images.resize2", "args": ["cat.png"]}))
    [ran] = run_jobs(broker, router)
    assert ran.outcome is Outcome.FAILED
    assert isinstance(ran.error, UnknownTask)
    [failed] = broker.failed_jobs()
    assert failed.job.id == job_id
    assert failed.failure.exc_type == "qw_core.errors.UnknownTask"
    assert failed.failure.message == (
        "no task named 'images.resize2' on this worker's router; did you mean 'images.resize'? "
        "It has 1: images.resize. Register it, then requeue the job from the failed registry"
    )


def test_an_unknown_task_with_no_close_name_is_named_with_what_the_router_has(router: Router) -> None:
    for n in range(12):
        router.task(name=f"t{n:02}")(lambda: None)
    with pytest.raises(UnknownTask) as raised:
        router("job-1", {"task": "zzz"})
    assert str(raised.value) == (
        "no task named 'zzz' on this worker's router. It has 12: t00, t01, t02, t03, t04, t05, t06, t07, "
        "t08, t09 and 2 more. Register it, then requeue the job from the failed registry"
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"image": "cat.png"}, "job data is not a task call"),
        ({"task": "resize", "args": ["cat.png"], "extra": 1}, "unknown keys 'extra'"),
        ({"task": "resize", "kwargs": {"img": "cat.png"}}, "missing a required argument: 'image'"),
    ],
)
def test_a_job_that_is_not_a_fitting_task_call_fails_clearly(
    router: Router, broker: MemoryBroker, data: Any, error: str
) -> None:
    ran_tasks: list[str] = []

    @router.task(name="resize")
    def resize(image: str) -> None:
        ran_tasks.append(image)

    broker.queue_job(Job.new(data))
    [ran] = run_jobs(broker, router)
    assert ran.outcome is Outcome.FAILED
    assert isinstance(ran.error, InvalidTaskCall)
    assert error in str(ran.error)
    assert ran_tasks == []
    [failed] = broker.failed_jobs()
    assert failed.failure.exc_type == "qw_core.errors.InvalidTaskCall"


def test_retries_follow_the_task_then_the_call(router: Router, broker: MemoryBroker) -> None:
    attempts: list[tuple[str, int]] = []

    @router.task(name="flaky", retry=2)
    def flaky(label: str) -> None:
        job = current_job()
        assert job is not None
        attempts.append((label, job.attempt))
        raise ValueError("down")

    flaky.enqueue("task")
    runs = run_jobs(broker, router)
    assert [run.outcome for run in runs] == [Outcome.RETRIED, Outcome.RETRIED, Outcome.FAILED]
    flaky.options(retry=0).enqueue("call")
    runs = run_jobs(broker, router)
    assert [run.outcome for run in runs] == [Outcome.FAILED]
    assert attempts == [("task", 1), ("task", 2), ("task", 3), ("call", 1)]
    assert len(broker.failed_jobs()) == 2


def test_an_async_task_past_its_time_limit_is_cancelled_per_task_and_per_call(
    router: Router, broker: MemoryBroker
) -> None:
    cancelled: list[str] = []

    @router.task(name="slow", timeout=0.2)
    async def slow(label: str, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.append(label)
            raise

    slow.enqueue("task limit", 30)
    slow.options(timeout=0.1).enqueue("call limit", 30)
    slow.options(timeout=30).enqueue("within a longer call limit", 0.3)
    runs = {run.job.data["args"][0]: run for run in run_jobs(broker, router)}  # type: ignore[call-overload,index]
    assert isinstance(runs["task limit"].error, JobTimeout)
    assert isinstance(runs["call limit"].error, JobTimeout)
    assert "0.1s limit" in str(runs["call limit"].error)
    assert runs["within a longer call limit"].outcome is Outcome.SUCCEEDED
    assert sorted(cancelled) == ["call limit", "task limit"]
    assert {failed.failure.kind for failed in broker.failed_jobs()} == {"timeout"}


def test_an_async_task_registered_after_a_plain_worker_started_fails_clearly(router: Router) -> None:
    @router.task(name="plain")
    def plain() -> None: ...

    @router.task(name="late")
    async def late() -> None: ...

    # A worker that started before "late" existed calls the router outside an event loop.
    with pytest.raises(TargetNotRun, match="task late is an async def function, but this worker runs"):
        router("job-1", {"task": "late"})
    assert router("job-2", {"task": "plain"}) is None


# -- results ---------------------------------------------------------------------------


def test_a_handle_gives_what_the_task_returned(broker: MemoryBroker, router: Router) -> None:
    @router.task(name="images.size")
    def size(image: str, width: int = 100) -> dict[str, Any]:
        return {"image": image, "width": width}

    @router.task(name="images.asize")
    async def asize(image: str) -> list[str]:
        return [image, "async"]

    plain, coroutine = size.enqueue("cat.png", width=50), asize.enqueue("dog.png")
    with pytest.raises(NoResult, match=f"no result for task images.size \\(job {plain.id}\\)"):
        plain.result()  # not run yet
    assert all(ran.succeeded for ran in run_jobs(broker, router))
    assert plain.result() == {"image": "cat.png", "width": 50}
    assert coroutine.result(timeout=5) == ["dog.png", "async"]


def test_a_handle_says_where_its_call_is(broker: MemoryBroker, router: Router) -> None:
    @router.task(name="images.size")
    def size(image: str) -> int:
        if image == "bad.png":
            raise ValueError("not an image")
        return 100

    good, bad = size.enqueue("cat.png"), size.enqueue("bad.png")
    assert good.status().state is State.QUEUED
    run_jobs(broker, router, plugins=PluginConfig(entry_points=False))
    done = good.status()
    assert done.state is State.SUCCEEDED
    assert done.result is not None
    assert done.result.value == 100
    assert bad.status().state is State.FAILED


def test_a_handle_on_a_broker_that_is_no_inspector_cannot_say_where_its_call_is() -> None:
    producer_only = cast(Producer, object())  # a Producer that is nothing more, as far as status() sees
    handle = TaskHandle(id="j-1", task="t", broker=producer_only)
    with pytest.raises(TypeError, match="object cannot say where a job is"):
        handle.status()


def test_a_task_that_returns_none_has_no_result(broker: MemoryBroker, router: Router) -> None:
    @router.task(name="quiet")
    def quiet() -> None:
        return None

    handle = quiet.enqueue()
    [ran] = run_jobs(broker, router)
    assert ran.succeeded
    with pytest.raises(NoResult, match=r"within 0\.1s"):
        handle.result(timeout=0.1)
