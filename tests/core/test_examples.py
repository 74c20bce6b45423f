"""The sample target the README's first command runs."""

from __future__ import annotations

import io
import json

import pytest

from qw_core.examples import echo


class RecordingStream(io.StringIO):
    """A stdout that remembers each ``write`` call, the unit a pipe keeps whole."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_echo_writes_each_line_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers share the manager's stdout; a line split over two writes can interleave with
    # another worker's line (seen in CI with PYTHONUNBUFFERED=1).
    stream = RecordingStream()
    monkeypatch.setattr("sys.stdout", stream)
    echo("job-1", {"sample": 1, "text": "héllo"})
    echo("job-2", [1, None])
    assert len(stream.writes) == 2
    assert all(write.endswith("\n") and write.count("\n") == 1 for write in stream.writes)
    first, second = (write.split(": ", 1)[1] for write in stream.writes)
    assert json.loads(first) == {"sample": 1, "text": "héllo"}
    assert json.loads(second) == [1, None]
