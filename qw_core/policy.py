"""The policies the core applies to failed jobs: when to retry, and how many to keep.

Both are frozen, picklable values, so a manager hands them to worker processes started
with ``fork`` or ``spawn`` alike:

* :class:`RetryPolicy` travels in :class:`~qw_core.plugins.PluginConfig` to the built-in
  retry plugin (``qw_core.builtin.retries``), and a job may override it field by field in
  ``job.meta["retry"]`` (:data:`RETRY_META_KEY`).
* :class:`FailedLimits` travels in the worker's spec and bounds the failed-job registry
  each time a job is failed (:meth:`~qw_core.broker.Broker.fail_job`), so a flood of
  failing jobs cannot fill the backend.

What qw does differently from its peers, and why: dramatiq's Retries middleware and
Celery's ``autoretry_for`` take exception *classes*; a policy here names them as strings
(``"builtins.ValueError"`` or just ``"ValueError"``, matched against the exception's whole
class hierarchy), because the policy must cross process boundaries, come from the command
line and from a job's JSON metadata. rq keeps failed jobs for a time-to-live cleaned up by
a periodic job; qw trims the oldest entries inside the same atomic step that adds one, so
the bound holds without anything else running.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from qw_core.errors import ConfigurationError

#: The ``Job.meta`` key holding a job's own retry settings (a JSON object whose keys are
#: :class:`RetryPolicy` field names), e.g. ``{"retry": {"max_retries": 5}}``.
RETRY_META_KEY = "retry"
#: The ``Job.meta`` key of a job's own time limit in seconds (overrides the manager's
#: ``job_timeout``; enforced by the manager, see :mod:`qw_core.status`).
TIMEOUT_META = "timeout"

_DAY = 86400.0


def _names(value: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(name) for name in value)


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    # NaN passes ``value < 0``, and an infinite delay or age would mean never (a retry that
    # never comes): both are refused here, where the mistake is made.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ConfigurationError(f"{attribute.name} must be a finite number of at least 0, not {value!r}")


def _fraction(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    _non_negative(instance, attribute, value)
    if value > 1:
        raise ConfigurationError(f"{attribute.name} must be between 0 and 1, not {value!r}")


def _count(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{attribute.name} must be a whole number of at least 0, not {value!r}")


def _unless_none(check: Callable[[object, attrs.Attribute[Any], Any], None]) -> Callable[..., None]:
    def validate(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check(instance, attribute, value)

    return validate


def exception_names(exc: BaseException) -> set[str]:
    """Every name a policy may use for ``exc``'s class or one of its bases.

    ``module.QualName`` for each class in the hierarchy, plus the bare name for builtins
    (``"ValueError"`` as well as ``"builtins.ValueError"``).
    """
    names: set[str] = set()
    for cls in type(exc).__mro__:
        names.add(f"{cls.__module__}.{cls.__qualname__}")
        if cls.__module__ == "builtins":
            names.add(cls.__qualname__)
    return names


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When a job whose target raised is run again, and after how long.

    The delay before retry ``n`` (1 for the first) is ``backoff * 2 ** (n - 1)``, capped at
    ``backoff_max``, then shortened by up to ``jitter`` of itself at random, so retries of
    jobs that failed together spread out instead of arriving together.

    :param max_retries: how many times a job is run again after its first run; ``0`` (the
        default) never retries, so a failed job goes straight to the failed registry.
    :param backoff: seconds before the first retry.
    :param backoff_max: the longest delay, in seconds.
    :param jitter: the largest fraction (0 to 1) taken off a delay at random.
    :param retry_on: exception types that are retried (with their subclasses); empty means
        every exception. Names as ``"module.QualName"``, or the bare name of a builtin.
    :param never_retry_on: exception types that are never retried, even if ``retry_on``
        matches too.
    """

    max_retries: int = attrs.field(default=0, validator=_count)
    backoff: float = attrs.field(default=1.0, validator=_non_negative)
    backoff_max: float = attrs.field(default=300.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.5, validator=_fraction)
    retry_on: tuple[str, ...] = attrs.field(default=(), converter=_names)
    never_retry_on: tuple[str, ...] = attrs.field(default=(), converter=_names)

    def retries(self, exc: BaseException) -> bool:
        """Whether this kind of exception is retried at all (attempts aside)."""
        names = exception_names(exc)
        if names.intersection(self.never_retry_on):
            return False
        return not self.retry_on or bool(names.intersection(self.retry_on))

    def delay(self, retry: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        exponent = min(max(retry - 1, 0), 64)  # 2**64 s is past any cap already
        delay = min(self.backoff_max, self.backoff * 2.0**exponent)
        if self.jitter:
            delay -= delay * self.jitter * (rng or random).random()
        return delay

    def with_overrides(self, overrides: object) -> RetryPolicy:
        """This policy with the fields a job's ``meta["retry"]`` sets.

        :raises ConfigurationError: ``overrides`` is not an object of known fields with
            valid values.
        """
        if not isinstance(overrides, Mapping):
            raise ConfigurationError(f"meta[{RETRY_META_KEY!r}] must be a JSON object, not {overrides!r}")
        known = {field.name for field in attrs.fields(RetryPolicy)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigurationError(
                f"meta[{RETRY_META_KEY!r}] has unknown keys {unknown} (known: {', '.join(sorted(known))})"
            )
        try:
            return attrs.evolve(self, **dict(overrides))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"meta[{RETRY_META_KEY!r}] is invalid: {exc}") from exc


@attrs.frozen(kw_only=True)
class FailedLimits:
    """How many failed jobs the failed-job registry keeps, and for how long.

    Enforced each time a job is failed: the oldest entries beyond ``max_count``, and those
    that failed more than ``max_age`` seconds before the new one, are deleted in the same
    atomic step. ``None`` lifts a bound.

    :param max_count: the most failed jobs kept (default 10,000).
    :param max_age: seconds a failed job is kept (default 30 days).
    """

    max_count: int | None = attrs.field(default=10_000, validator=_unless_none(_count))
    max_age: float | None = attrs.field(default=30 * _DAY, validator=_unless_none(_non_negative))


#: The bounds used when nobody configured any.
DEFAULT_FAILED_LIMITS = FailedLimits()
#: No bounds at all.
UNLIMITED = FailedLimits(max_count=None, max_age=None)
