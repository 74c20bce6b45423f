"""A task call as a job: its data (the wire format) and its options (queue, delay, and
the job's own retry settings and time limit), for :mod:`qw_core.tasks`.

**The wire format.** A task call is a job whose data is a JSON object with at most three
keys::

    {"task": "myapp.tasks:resize", "args": ["cat.png"], "kwargs": {"width": 100}}

``task`` (required) is the task's name; ``args`` (a JSON array, default ``[]``) and
``kwargs`` (a JSON object, default ``{}``) are its arguments (:func:`task_call` leaves out
the empty ones). As a job written with plain Redis commands carries its fields as
strings, ``args`` and ``kwargs`` may also be their JSON text. Any other key is refused
(:func:`parse_task_call`), so that a key a later version adds is never silently ignored
by a worker that does not know it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

import attrs

from qw_core.encoding import int_fits_json
from qw_core.errors import ConfigurationError, InvalidTaskCall
from qw_core.models import JSON
from qw_core.policy import RETRY_META_KEY, TIMEOUT_META, RetryPolicy
from qw_core.unique import Unique, as_unique

#: The keys of a task call's job data (see the module's docstring).
TASK_KEY, ARGS_KEY, KWARGS_KEY = "task", "args", "kwargs"
_CALL_KEYS = (TASK_KEY, ARGS_KEY, KWARGS_KEY)

#: A task's retry setting: the most retries, or fields of :class:`~qw_core.RetryPolicy`
#: (``{"max_retries": 5, "backoff": 10}``), which go into each job's ``meta["retry"]``.
RetrySetting: TypeAlias = "int | Mapping[str, Any]"
#: A task's unique setting: ``True`` (the task and its arguments, held until the call
#: ends), a key, a :class:`~qw_core.unique.Unique` (whose key ``None`` means the task and
#: its arguments), or ``False`` (not unique, over a task that is).
UniqueTaskSetting: TypeAlias = "bool | str | Unique"


# -- the wire format -------------------------------------------------------------------


@attrs.frozen
class TaskCall:
    """A task call, as read from a job's data.

    :param task: the task's name.
    :param args: positional arguments.
    :param kwargs: keyword arguments.
    """

    task: str
    args: list[JSON] = attrs.field(factory=list)
    kwargs: dict[str, JSON] = attrs.field(factory=dict)


def task_call(task: str, args: list[JSON], kwargs: dict[str, JSON]) -> dict[str, JSON]:
    """The job data of a call of ``task``: empty ``args`` and ``kwargs`` are left out."""
    data: dict[str, JSON] = {TASK_KEY: task}
    if args:
        data[ARGS_KEY] = args
    if kwargs:
        data[KWARGS_KEY] = kwargs
    return data


def parse_task_call(data: JSON) -> TaskCall:
    """Read a task call from a job's data.

    :raises InvalidTaskCall: ``data`` is not a task call (not an object, a key other than
        ``task``, ``args`` and ``kwargs``, or one of the wrong type).
    """
    shape = '{"task": NAME, "args": [...], "kwargs": {...}}'
    if not isinstance(data, dict):
        raise InvalidTaskCall(f"job data is not a task call {shape}: it is {_kind(data)}")
    unknown = sorted(set(data) - set(_CALL_KEYS))
    if unknown:
        raise InvalidTaskCall(
            f"job data is not a task call {shape}: unknown keys {', '.join(map(repr, unknown))}"
        )
    name = data.get(TASK_KEY)
    if not isinstance(name, str) or not name:
        raise InvalidTaskCall(f"job data is not a task call {shape}: 'task' must name a task, not {name!r}")
    args = _decoded(data.get(ARGS_KEY, []), ARGS_KEY)
    kwargs = _decoded(data.get(KWARGS_KEY, {}), KWARGS_KEY)
    if not isinstance(args, list):
        raise InvalidTaskCall(f"task call of {name!r}: 'args' must be a JSON array, not {_kind(args)}")
    if not isinstance(kwargs, dict):
        raise InvalidTaskCall(f"task call of {name!r}: 'kwargs' must be a JSON object, not {_kind(kwargs)}")
    return TaskCall(name, args, kwargs)


def _decoded(value: JSON, key: str) -> JSON:
    """``value``, or what its JSON text holds (a field of a hand-written Redis hash)."""
    if not isinstance(value, str):
        return value
    try:
        decoded: JSON = json.loads(value)
    except ValueError as exc:
        raise InvalidTaskCall(f"task call: {key!r} is a string that is not JSON: {exc}") from None
    return decoded


def _why_not_json_scalar(value: object, where: str) -> str | None:
    """:func:`why_not_json` for a value that is neither a list nor a dict."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return None if value.isascii() or _is_unicode(value) else f"{where} holds a lone surrogate, not text"
    if isinstance(value, int):
        return None if int_fits_json(value) else f"{where} is an int too long to write as text"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, which JSON cannot hold"
    kind = type(value).__name__
    return f"{where} is {'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _is_unicode(text: str) -> bool:
    """Whether ``text`` is Unicode that UTF-8 can carry (no lone surrogate such as
    ``"\\ud800"``, which ``json.dumps`` lets through and no backend can store)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def why_not_json(value: object, where: str) -> str | None:
    """What in ``value`` would not come back from JSON as itself, or ``None``."""
    if isinstance(value, list):
        items = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                return f"{where} has the key {key!r} ({type(key).__name__}): JSON keys are strings"
            if not (key.isascii() or _is_unicode(key)):
                return f"{where} has a key {key!r} with a lone surrogate, not text"
        items = [(f"{where}[{key!r}]", item) for key, item in value.items()]
    else:
        return _why_not_json_scalar(value, where)
    reasons = (why_not_json(item, inner) for inner, item in items)
    return next((reason for reason in reasons if reason is not None), None)


# -- options ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TaskOptions:
    """Where and how a task's calls are queued; ``None`` leaves a setting to the level
    below (a call's options over its task's, the task's over the manager's settings).

    :param queue: the named queue (``"default"``: the shared one).
    :param delay: seconds before a call may run.
    :param retry: the most retries, or :class:`~qw_core.RetryPolicy` fields, as JSON.
    :param timeout: seconds a run may take.
    :param unique: how calls are unique (:mod:`qw_core.unique`); ``False``: not unique.
    """

    queue: str | None = None
    delay: float | None = None
    retry: Mapping[str, JSON] | None = None
    timeout: float | None = None
    unique: Unique | bool | None = None

    @classmethod
    def checked(
        cls,
        *,
        queue: str | None = None,
        delay: float | None = None,
        retry: RetrySetting | None = None,
        timeout: float | None = None,
        unique: UniqueTaskSetting | None = None,
    ) -> TaskOptions:
        """Options from a user's arguments, each checked.

        :raises ConfigurationError: one is not valid, saying which and why.
        """
        if queue is not None and (not isinstance(queue, str) or not queue.strip()):
            raise ConfigurationError(f"queue must be a queue's name, not {queue!r}")
        if delay is not None and not _seconds(delay, zero=True):
            raise ConfigurationError(f"delay must be a finite number of seconds, 0 or more, not {delay!r}")
        if timeout is not None and not _seconds(timeout, zero=False):
            raise ConfigurationError(f"timeout must be a positive number of seconds, not {timeout!r}")
        checked_unique = unique if unique is None or unique is False else as_unique(unique)
        return cls(queue=queue, delay=delay, retry=_retry(retry), timeout=timeout, unique=checked_unique)

    def over(self, below: TaskOptions) -> TaskOptions:
        """These options, the unset ones taken from ``below`` (retry settings field by field)."""
        retry = {**(below.retry or {}), **(self.retry or {})} if below.retry or self.retry else None
        return TaskOptions(
            queue=below.queue if self.queue is None else self.queue,
            delay=below.delay if self.delay is None else self.delay,
            retry=retry,
            timeout=below.timeout if self.timeout is None else self.timeout,
            unique=below.unique if self.unique is None else self.unique,
        )

    def meta(self) -> dict[str, JSON]:
        """The job metadata these options set."""
        meta: dict[str, JSON] = {}
        if self.retry:
            meta[RETRY_META_KEY] = dict(self.retry)
        if self.timeout is not None:
            meta[TIMEOUT_META] = self.timeout
        return meta


def _seconds(value: object, *, zero: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value >= 0 if zero else value > 0


def _retry(retry: RetrySetting | None) -> Mapping[str, JSON] | None:
    """A retry setting as the JSON of ``meta["retry"]``, checked against the policy's fields."""
    if retry is None:
        return None
    if isinstance(retry, bool) or not isinstance(retry, (int, Mapping)):
        raise ConfigurationError(f"retry must be a number of retries or RetryPolicy fields, not {retry!r}")
    fields: dict[str, Any] = {"max_retries": retry} if isinstance(retry, int) else dict(retry)
    for name in ("retry_on", "never_retry_on"):  # names of exceptions: JSON wants a list
        if name in fields and not isinstance(fields[name], str):
            fields[name] = list(fields[name])
    try:
        RetryPolicy().with_overrides(fields)
    except ConfigurationError as exc:
        raise ConfigurationError(str(exc).replace(f"meta[{RETRY_META_KEY!r}]", "retry", 1)) from None
    if (reason := why_not_json(fields, "retry")) is not None:
        raise ConfigurationError(f"retry settings must be JSON: {reason}")
    return MappingProxyType(fields)
