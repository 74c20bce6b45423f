"""The traceback a failed job keeps: Python's own text, less the ``^^^^`` marker lines."""

from __future__ import annotations

import sys
import traceback

import pytest

from qw_core.models import Failure
from qw_core.tracebacks import format_exception

if sys.version_info < (3, 11):
    import exceptiongroup  # the backport of exception groups: a test dependency on 3.10


def python_text_without_markers(exc: BaseException) -> str:
    """What ``traceback.format_exception`` writes, less the lines that only hold markers."""
    lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).splitlines(keepends=True)
    return "".join(line for line in lines if not (line.strip() and set(line.strip()) <= set("^~")))


def inner(n: int) -> int:
    return {"a": 1}["b" * n]


def outer() -> None:
    try:
        inner(2)
    except KeyError as exc:
        raise ValueError("could not look it up") from exc


def handling() -> None:
    try:
        outer()
    except ValueError:
        raise RuntimeError("and then this")  # noqa: B904 - the implicit context is the point


def caught(raiser: object) -> BaseException:
    try:
        raiser()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("it did not raise")


def suppressed() -> None:
    try:
        inner(1)
    except KeyError:
        raise LookupError("context suppressed") from None


def with_note() -> None:
    error = ValueError("noted")
    if sys.version_info >= (3, 11):
        error.add_note("a note for the reader")
    raise error


@pytest.mark.parametrize("raiser", [outer, handling, suppressed, with_note, lambda: inner(3)])
def test_the_text_is_pythons_without_its_marker_lines(raiser: object) -> None:
    exc = caught(raiser)
    assert format_exception(exc) == python_text_without_markers(exc)


def test_every_frame_and_link_of_a_chain_is_kept() -> None:
    text = format_exception(caught(handling))
    assert text.count("Traceback (most recent call last):") == 3
    assert "The above exception was the direct cause of the following exception:" in text
    assert "During handling of the above exception, another exception occurred:" in text
    assert 'return {"a": 1}["b" * n]' in text, "with each frame's source line"
    assert text.rstrip().endswith("RuntimeError: and then this")


def test_an_exception_that_was_never_raised_has_no_traceback_part() -> None:
    assert format_exception(ValueError("made, not raised")) == "ValueError: made, not raised\n"


def test_a_cycle_of_contexts_ends() -> None:
    first, second = ValueError("first"), ValueError("second")
    first.__context__, second.__context__ = second, first
    assert (
        format_exception(first)
        == "ValueError: second\n"
        + ("\nDuring handling of the above exception, another exception occurred:\n\n")
        + "ValueError: first\n"
    )


def test_an_exception_group_gets_pythons_full_text() -> None:
    # Python's own group from 3.11 on; on 3.10 the backport's (which pytest needs there).
    if sys.version_info >= (3, 11):
        group_type = ExceptionGroup  # noqa: F821 - a builtin from 3.11 on
    else:
        group_type = exceptiongroup.ExceptionGroup

    def group() -> None:
        raise group_type("several", [ValueError("one"), TypeError("two")])

    exc = caught(group)
    text = format_exception(exc)
    assert text == "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert "ValueError: one" in text
    assert "TypeError: two" in text


def test_a_failure_keeps_the_text() -> None:
    exc = caught(outer)
    assert Failure.from_exception(exc, worker="w").traceback == python_text_without_markers(exc)
