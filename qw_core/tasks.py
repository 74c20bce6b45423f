"""Task functions: register plain or ``async def`` functions on a :class:`Router`, queue
calls to them with JSON arguments, and run the router as a qw target.

::

    router = Router(broker=lambda: RedisBroker.from_url(URL))

    @router.task(retry=3)
    def resize(image: str, width: int = 100) -> None: ...

    resize.enqueue("cat.png", width=100)              # checked, queued; a TaskHandle
    resize.options(queue="images", delay=5).enqueue("dog.png")
    resize("cat.png")                                 # a plain call, in this process

and ``qw run myapp.tasks:router`` runs them. The router *is* the target: a worker calls
``router(job_id, job_data)`` as it calls any target, so hooks, retries, time limits,
``current_job()`` and the failed registry are the same as for a hand-written one.

**The wire format** (:mod:`qw_core.taskcalls`). A task call is a job whose data is
``{"task": NAME, "args": [...], "kwargs": {...}}``; any other key fails the job, as does a
name the router does not have (:class:`~qw_core.errors.UnknownTask`) or arguments that
do not fit the function: the job goes to the failed registry like any failure, to be
requeued once the worker knows the task. A task's queue, retry and timeout settings
travel as the job's own (``Job.queue``, ``meta["retry"]``, ``meta["timeout"]``), written
by ``enqueue``: a job queued by other means gets the manager's unless it carries them.

**Sync and async tasks.** qw picks a worker's executor from ``is_async(target)`` when the
worker starts. A router says it is async (``qw_async``) as soon as one of its tasks is:
its worker then runs jobs as tasks on an event loop (100 at once by default, ``-c``), an
async task is awaited there, and a plain one runs on a thread of the router's own (one
per job in flight, reused), so it never blocks the loop. A router of plain functions alone
runs them as any plain target (one at a time in the worker's thread, or on ``-c N``
threads). So in a mixed router plain tasks run on threads, side by side: keep those that
are not thread-safe on a router of their own (``qw run`` it separately). A plain task
that overruns its time limit in a mixed router is settled as timed out, and its thread
is left to end by itself (a thread cannot be stopped), as with ``-c N``.

What qw does differently from its peers, and why. rq queues any importable function by
its dotted path, so a job's data decides what a worker imports; dramatiq, celery and arq
look the name up in a registry, as qw does, but celery and dramatiq fill it as a side
effect of importing the task modules, into an application or broker object, and arq
calls by string with no check of the arguments. Here the registry is the target itself,
named on the command line, and nothing else is ever imported or called. The call is
checked against the function's signature and the arguments against JSON when it is
queued, not on every run; a name registered twice is an error, not a silent overwrite;
and ``enqueue`` has the function's parameter types (a :class:`typing.ParamSpec`), so
mypy refuses a wrong call. Arguments are JSON only, never pickled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import difflib
import functools
import inspect
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Generic, ParamSpec, TypeAlias, TypeVar, overload

import attrs

from qw_core.broker import Inspector, Producer
from qw_core.errors import (
    ConfigurationError,
    DuplicateTask,
    InvalidTaskCall,
    NoResult,
    TargetNotRun,
    UnknownTask,
)
from qw_core.models import JSON, Job, JobState
from qw_core.schedules import DEFAULT_CATCH_UP, Missed, Schedule
from qw_core.taskcalls import (
    RetrySetting,
    TaskOptions,
    UniqueTaskSetting,
    parse_task_call,
    task_call,
    why_not_json,
)
from qw_core.unique import UNIQUE_META, Unique, call_key

P = ParamSpec("P")
R = TypeVar("R")

#: Where a router or a call queues: a broker, or a factory that opens one.
BrokerSetting: TypeAlias = "Producer | Callable[[], Producer]"

#: Threads a router's plain tasks may use at once in a worker running async jobs: never
#: fewer than the jobs in flight (at most qw's ``MAX_CONCURRENCY``), so none waits for one.
_MAX_THREADS = 1000


# -- tasks -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TaskHandle:
    """A queued task call.

    :param id: the job's id (``qw failed show ID`` and the like take it).
    :param task: the task's name.
    :param queue: the queue it went to (``None``: the shared queue).
    :param broker: the broker it was queued on.
    :param created: ``False`` if the task is unique and a call holding its key was queued,
        delayed or running already: ``id`` is that call's, and nothing was queued.
    """

    id: str
    task: str
    queue: str | None = None
    broker: Producer = attrs.field(eq=False, repr=False)
    created: bool = True

    def result(self, timeout: float = 0.0) -> JSON:
        """What the task returned, waiting up to ``timeout`` seconds for it (blocking in
        the broker, not polling). Kept for the worker's ``--result-ttl`` (10 minutes by
        default); see :mod:`qw_core.results`.

        :raises NoResult: none in time: the job has not finished, returned ``None``,
            failed (``qw failed show ID``), or its result expired.
        """
        found = self.broker.wait_result(self.id, timeout) if timeout > 0 else self.broker.get_result(self.id)
        if found is None:
            raise NoResult(
                f"no result for task {self.task} (job {self.id})"
                + (f" within {timeout:g}s" if timeout > 0 else "")
                + ": it has not finished, returned None, failed, or its result expired"
            )
        return found.value

    def status(self) -> JobState:
        """Where the call is now: queued, delayed, held by a worker, failed, succeeded (with
        its result), or unknown (see :meth:`Inspector.job_status`). It reads; the job moves
        on while the answer travels, so wait with :meth:`result` rather than poll this.

        :raises TypeError: the broker it was queued on cannot say (it is a producer only).
        """
        if not isinstance(self.broker, Inspector):
            raise TypeError(
                f"{type(self.broker).__name__} cannot say where a job is (it is no Inspector): "
                "ask a broker that is, with job_status(id)"
            )
        return self.broker.job_status(self.id)


class Task(Generic[P, R]):
    """A function registered on a :class:`Router` (made by :meth:`Router.task`).

    Calling it calls the function, in this process. :meth:`enqueue` queues a call of it,
    checked against the function's signature; :meth:`options` gives the same task with
    other settings for the calls queued through it.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str,
        router: Router,
        options: TaskOptions,
        broker: Producer | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)  # first: it copies the function's __dict__ in
        self.fn = fn
        self.name = name
        self.router = router
        self.defaults = options
        self.broker = broker
        self.signature = inspect.signature(fn)
        self.is_async = _is_coroutine_function(fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function itself, here and now (nothing is queued)."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def options(
        self,
        *,
        queue: str | None = None,
        delay: float | None = None,
        retry: RetrySetting | None = None,
        timeout: float | None = None,
        unique: UniqueTaskSetting | None = None,
        broker: Producer | None = None,
    ) -> Task[P, R]:
        """This task with settings of its own for the calls queued through it (the unset
        ones are the task's): ``resize.options(queue="images", delay=5).enqueue(...)``.

        :param queue: the named queue (``"default"``: the shared one).
        :param delay: seconds before a call may run.
        :param retry: the most retries, or :class:`~qw_core.RetryPolicy` fields.
        :param timeout: seconds a run may take before it fails as timed out.
        :param unique: ``True``: while a call with the same arguments is queued, delayed
            or running, queueing another returns its handle instead (``created`` false);
            a key or a :class:`~qw_core.unique.Unique` (see :mod:`qw_core.unique`);
            ``False``: not unique.
        :param broker: where to queue, instead of the router's broker.
        :raises ConfigurationError: a setting is not valid.
        """
        given = TaskOptions.checked(queue=queue, delay=delay, retry=retry, timeout=timeout, unique=unique)
        return Task(
            self.fn,
            name=self.name,
            router=self.router,
            options=given.over(self.defaults),
            broker=self.broker if broker is None else broker,
        )

    def job(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """The job of a call with these arguments, not queued (for ``broker.queue_jobs``,
        which queues many in one go; a delay is then that call's).

        :raises InvalidTaskCall: the arguments do not fit the function's signature, or one
            is not JSON (the message names it).
        """
        call_args, call_kwargs = self._checked(args, kwargs)
        data = task_call(self.name, call_args, call_kwargs)
        meta = self.defaults.meta()
        unique = self.defaults.unique
        if isinstance(unique, Unique):
            if unique.key is None:
                bound = self.bind(args, kwargs)
                bound.apply_defaults()
                unique = unique.with_key(call_key(self.name, bound.arguments))
            meta[UNIQUE_META] = unique.meta()
        return Job.new(data, queue=self.defaults.queue, meta=meta)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle:
        """Queue a call of the task with these arguments.

        :raises InvalidTaskCall: the arguments do not fit the function's signature, or one
            is not JSON (the message names it); nothing is queued.
        :raises ConfigurationError: no broker to queue on.
        """
        job = self.job(*args, **kwargs)
        broker = self.router.open_broker(self.broker)
        queued = broker.queue_job_unique(job, delay=self.defaults.delay or 0.0)
        return TaskHandle(
            id=queued.id, task=self.name, queue=job.queue, broker=broker, created=queued.created
        )

    def _checked(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[JSON], dict[str, JSON]]:
        """The arguments as JSON, once bound to the signature and checked."""
        bound = self.bind(args, kwargs)
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                found = [why_not_json(item, f"{name}[{n}]") for n, item in enumerate(value)]
            elif kind is inspect.Parameter.VAR_KEYWORD:
                found = [why_not_json(item, key) for key, item in value.items()]
            else:
                found = [why_not_json(value, name)]
            reason = next((reason for reason in found if reason is not None), None)
            if reason is not None:
                raise InvalidTaskCall(
                    f"cannot queue {self.name}: argument {reason} (arguments must be JSON: str, int, "
                    "float, bool, None, and lists and str-keyed dicts of them)"
                )
        return list(args), dict(kwargs)

    def bind(self, args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any]) -> inspect.BoundArguments:
        """The arguments bound to the function's signature.

        :raises InvalidTaskCall: they do not fit it (Python's reason, with the signature).
        """
        try:
            return self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidTaskCall(f"task {self.name} takes {_parameters(self.signature)}: {exc}") from None


def _parameters(signature: inspect.Signature) -> str:
    """``signature`` without annotations, as a call is written: ``(image, width=100)``."""
    empty = inspect.Parameter.empty
    bare = [parameter.replace(annotation=empty) for parameter in signature.parameters.values()]
    return str(signature.replace(parameters=bare, return_annotation=empty))


def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    """:func:`qw_core.execution.is_async`'s test of a function, without importing the
    worker's modules (and pluggy) into every program that only queues."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - a class instance's method
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def default_name(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of ``fn``: the same in every process that imports its module.

    :raises ConfigurationError: ``fn`` has no such name, or lives in a script run as
        ``__main__`` (whose module has another name in a worker).
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = getattr(spec, "name", None)  # python -m pkg.mod: the name a worker imports
        if module is None or module == "__main__":
            raise ConfigurationError(
                f"task {qualname} is defined in a script run as __main__, which a worker imports "
                "under another name: define it in a module, or give it name=..."
            )
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise ConfigurationError(f"{fn!r} has no module and qualified name: give the task name=...")
    return f"{module}:{qualname}"


# -- the router ------------------------------------------------------------------------


class Router:
    """Task functions under names, and the qw target that runs calls of them.

    :param broker: where :meth:`Task.enqueue` queues: a broker, or a factory that opens one
        (called once per thread that queues, in each process, when it first queues). A
        broker given as such serves one thread (as every broker does). ``None``: set
        :attr:`broker` later, or pass ``broker=`` to :meth:`Task.options`.

    A router is not picklable (its tasks stand where their functions were, so they cannot
    be found by name): give a manager that starts its workers with ``spawn`` the router's
    name, ``Manager("myapp.tasks:router", ...)``, as ``qw run`` does.
    """

    def __init__(self, broker: BrokerSetting | None = None) -> None:
        self._tasks: dict[str, Task[..., Any]] = {}
        self._schedules: dict[str, Schedule] = {}
        self._broker = broker
        self._opened = threading.local()
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def __repr__(self) -> str:
        count = len(self._tasks)
        return f"<Router with {count} task{'' if count == 1 else 's'}>"

    # -- registering -----------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        delay: float | None = None,
        retry: RetrySetting | None = None,
        timeout: float | None = None,
        schedule: str | None = None,
        unique: UniqueTaskSetting | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        delay: float | None = None,
        retry: RetrySetting | None = None,
        timeout: float | None = None,
        schedule: str | None = None,
        unique: UniqueTaskSetting | None = None,
    ) -> Any:
        """Register a function (plain or ``async def``) as a task: ``@router.task``, or
        ``@router.task(name=..., queue=..., delay=..., retry=..., timeout=..., unique=...)``.

        :param name: the name jobs call it by; default ``module:qualname``.
        :param queue: the named queue its calls go to (default: the shared queue).
        :param delay: seconds before each call may run.
        :param retry: the most retries, or :class:`~qw_core.RetryPolicy` fields
            (``{"max_retries": 5, "backoff": 10}``), over the manager's policy.
        :param timeout: seconds a run may take before it fails as timed out.
        :param schedule: a cron expression: every manager running this router calls the
            task (with no arguments) at each of its ticks, in UTC, each tick once (the
            schedule's id is the task's name). :meth:`schedule` takes arguments and a zone.
        :param unique: make calls unique: ``True`` for "the task and its arguments" (while
            such a call is queued, delayed or running, ``enqueue`` returns its handle,
            ``created`` false), or a key or :class:`~qw_core.unique.Unique`.
        :raises DuplicateTask: the router has a task of that name already.
        :raises ConfigurationError: a setting is not valid, or the function has no
            lasting name (give one).
        """
        options = TaskOptions.checked(queue=queue, delay=delay, retry=retry, timeout=timeout, unique=unique)

        def register(fn: Callable[..., Any]) -> Task[..., Any]:
            task = self._register(fn, name, options)
            if schedule is not None:
                self.schedule(task, schedule)
            return task

        return register if fn is None else register(fn)

    def _register(self, fn: Callable[P, R], name: str | None, options: TaskOptions) -> Task[P, R]:
        if isinstance(fn, Task):
            fn = fn.fn
        if not callable(fn):
            raise ConfigurationError(f"a task must be a function, not {fn!r}")
        if name is None:
            name = default_name(fn)
        elif not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"a task's name must be a non-empty string, not {name!r}")
        task = Task(fn, name=name, router=self, options=options)
        with self._lock:
            if name in self._tasks:
                raise DuplicateTask(
                    f"a task named {name!r} is registered on this router already "
                    f"({self._tasks[name].fn!r}): give one of them another name=..."
                )
            self._tasks[name] = task
        return task

    @property
    def tasks(self) -> Mapping[str, Task[..., Any]]:
        """The tasks by name (read-only)."""
        return MappingProxyType(self._tasks)

    # -- periodic calls --------------------------------------------------------------

    def schedule(
        self,
        task: Task[..., Any],
        cron: str,
        *,
        args: Sequence[JSON] = (),
        kwargs: Mapping[str, JSON] | None = None,
        id: str | None = None,
        timezone: str = "UTC",
        missed: Missed = "latest",
        catch_up: int = DEFAULT_CATCH_UP,
    ) -> Schedule:
        """Call ``task`` with these arguments at each tick of ``cron``, from every manager
        that runs this router (``qw run myapp.tasks:router``), each tick once.

        The call is checked as :meth:`Task.enqueue` checks one; it goes to the task's
        queue with its retry and timeout settings. See :class:`~qw_core.schedules.Schedule`.

        :param id: the schedule's id; default the task's name (give one to schedule a
            task twice).
        :raises InvalidTaskCall: the arguments do not fit the task.
        :raises ConfigurationError: a bad expression or setting, or an id in use here.
        """
        if task.router is not self:
            raise ConfigurationError(f"task {task.name} is not registered on this router")
        job = task.job(*args, **dict(kwargs or {}))
        found = Schedule(
            cron,
            data=job.data,
            id=task.name if id is None else id,
            queue=job.queue,
            timezone=timezone,
            missed=missed,
            catch_up=catch_up,
            meta=job.meta,
        )
        with self._lock:
            if found.id in self._schedules:
                raise ConfigurationError(
                    f"schedule id {found.id!r} is in use on this router: give router.schedule(..., id=...)"
                )
            self._schedules[found.id] = found
        return found

    @property
    def qw_schedules(self) -> tuple[Schedule, ...]:
        """The router's schedules: a manager running the router enqueues their ticks."""
        return tuple(self._schedules.values())

    # -- queueing --------------------------------------------------------------------

    @property
    def broker(self) -> BrokerSetting | None:
        """Where the tasks' calls are queued (a broker, or a factory; settable: in a test,
        ``monkeypatch.setattr(router, "broker", MemoryBroker())``)."""
        return self._broker

    @broker.setter
    def broker(self, broker: BrokerSetting | None) -> None:
        self._broker = broker
        self._opened = threading.local()

    def open_broker(self, override: Producer | None = None) -> Producer:
        """The broker to queue on: ``override`` if given, else the router's (a factory's
        broker is opened once per thread and process).

        :raises ConfigurationError: neither is set.
        """
        if override is not None:
            return override
        setting = self._broker
        if setting is None:
            raise ConfigurationError(
                "this router has no broker to queue on: give Router(broker=...), set router.broker, "
                "or pass .options(broker=...)"
            )
        if isinstance(setting, Producer):
            return setting
        opened = getattr(self._opened, "broker", None)
        if opened is None or self._opened.pid != os.getpid():
            opened = setting()
            self._opened.broker, self._opened.pid = opened, os.getpid()
        return opened

    # -- running: the target ---------------------------------------------------------

    @property
    def qw_async(self) -> bool:
        """Whether any task is an ``async def`` function: qw then runs this target's jobs
        on an event loop (see the module's docstring)."""
        return any(task.is_async for task in list(self._tasks.values()))

    def __call__(self, job_id: str, job_data: JSON) -> Any:
        """Run the task call ``job_data`` holds (the target's side).

        On an event loop (a worker of an async router), returns an awaitable: the async
        task's coroutine, or a plain task's run on a thread. Otherwise calls the task.

        :raises InvalidTaskCall: the data is not a task call, or its arguments do not fit.
        :raises UnknownTask: no task has its name.
        """
        call = parse_task_call(job_data)
        task = self._tasks.get(call.task)
        if task is None:
            raise self._unknown(call.task)
        task.bind(call.args, call.kwargs)
        on_loop = _loop_running()
        if task.is_async:
            if not on_loop:
                raise TargetNotRun(
                    f"task {task.name} is an async def function, but this worker runs its router's jobs "
                    "as plain calls: no async task was registered when it started. Register every task "
                    "when the module that qw run names is imported"
                )
            return task.fn(*call.args, **call.kwargs)
        if on_loop:
            return self._in_thread(task.fn, call.args, call.kwargs)
        return task.fn(*call.args, **call.kwargs)

    def _unknown(self, name: str) -> UnknownTask:
        known = sorted(self._tasks)
        listed = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "") or "none"
        close = _closest(name, known)
        hint = f"; did you mean {close!r}?" if close else "."
        return UnknownTask(
            f"no task named {name!r} on this worker's router{hint} It has {len(known)}: {listed}. "
            "Register it, then requeue the job from the failed registry"
        )

    async def _in_thread(self, fn: Callable[..., Any], args: list[JSON], kwargs: dict[str, JSON]) -> Any:
        """Run a plain task on a thread of the router's pool, in this job's context."""
        run = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._threads(), run)

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        """This process's pool for plain tasks (a pool a forked process inherited has no threads)."""
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = concurrent.futures.ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="qw-task")
                self._pool_pid = os.getpid()
            return self._pool


def _closest(name: str, known: list[str]) -> str | None:
    """The name in ``known`` closest to ``name``, compared by their last parts (the
    function's own name), since most share a long module prefix."""
    by_short = {_short(other): other for other in known}
    close = difflib.get_close_matches(_short(name), list(by_short), n=1)
    return by_short[close[0]] if close else None


def _short(name: str) -> str:
    return name.replace(":", ".").rsplit(".", 1)[-1]


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
