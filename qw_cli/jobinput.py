"""Reading job data: one JSON document, or a stream of them (JSON Lines).

Everything is parsed before anything is queued, so malformed input queues nothing. A
syntax error names where it is (``line 3, column 5: Expecting value``), counted in the
whole input. A file or stdin may hold one document (pretty-printed or not) or any number
of documents separated by whitespace, which covers JSON Lines (one job per non-empty
line). ``NaN`` and ``Infinity``, which Python's json module accepts but JSON does not, are
refused here rather than by the broker later.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, NoReturn

from qw_core.errors import InvalidJob

if TYPE_CHECKING:
    from qw_core.models import JSON

_WHITESPACE = re.compile(r"[ \t\n\r]*")


class _NotJson(ValueError):
    """A constant (NaN, Infinity) that JSON does not have."""


def _refuse_constant(name: str) -> NoReturn:
    raise _NotJson(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_document(text: str, source: str) -> JSON:
    """The one JSON document in ``text`` (the ``DATA`` argument).

    :param source: how messages name the input (``the DATA argument``, a file name).
    :raises InvalidJob: ``text`` is empty, malformed, or holds more than one document.
    """
    documents = parse_documents(text, source)
    if len(documents) > 1:
        raise InvalidJob(f"{source} holds {len(documents)} JSON documents; give one (or use --file for many)")
    return documents[0]


def parse_documents(text: str, source: str) -> list[JSON]:
    """Every JSON document in ``text``, in order.

    :raises InvalidJob: ``text`` holds no document, or one is malformed.
    """
    return [document for _, document in parse_lines(text, source)]


def parse_lines(text: str, source: str) -> list[tuple[int, JSON]]:
    """Every JSON document in ``text``, in order, with the line it starts on.

    :raises InvalidJob: ``text`` holds no document, or one is malformed.
    """
    documents: list[tuple[int, JSON]] = []
    pos = _WHITESPACE.match(text, 0).end()  # type: ignore[union-attr]  # matches the empty string
    while pos < len(text):
        start = pos
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InvalidJob(
                f"invalid JSON in {source}: line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except (_NotJson, RecursionError, ValueError) as exc:
            if isinstance(exc, RecursionError):
                why = "nested too deeply"
            elif isinstance(exc, _NotJson):
                why = str(exc)
            else:  # an integer of more digits than Python reads (4300 by default)
                why = "a number too long to read"
            line = text.count("\n", 0, start) + 1
            raise InvalidJob(f"invalid JSON in {source}: line {line}: {why}") from None
        documents.append((text.count("\n", 0, start) + 1, value))
        pos = _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]
    if not documents:
        raise InvalidJob(f"{source} is empty: no job data to queue")
    return documents


def decode(raw: bytes, source: str) -> str:
    """``raw`` as UTF-8 text (a leading byte-order mark is dropped).

    :raises InvalidJob: ``raw`` is not UTF-8.
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidJob(f"{source} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
