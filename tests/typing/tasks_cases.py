"""What mypy sees of task functions: checked by tests/test_typing.py, never run.

A line ending ``# E: CODE`` must draw exactly that mypy error; every other line none.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from qw_core.models import Job
from qw_core.tasks import Router, TaskHandle

router = Router()


@router.task
def resize(image: str, width: int = 100) -> bytes:
    return image.encode() * width


@router.task(queue="emails", retry={"max_retries": 5}, timeout=30)
async def send(to: str, *, subject: str) -> None: ...


assert_type(resize("cat.png", width=3), bytes)
assert_type(resize.enqueue("cat.png", width=100), TaskHandle)
assert_type(resize.options(queue="images", delay=5).enqueue("cat.png"), TaskHandle)
assert_type(resize.job("cat.png"), Job)
assert_type(send.enqueue("a@example.com", subject="hi"), TaskHandle)
coroutine = send("a@example.com", subject="hi")  # called directly: the function itself
same = assert_type(coroutine, Coroutine[Any, Any, None])  # (a bare coroutine expression is an error)
same.close()

resize.enqueue(100)  # E: arg-type
resize.enqueue("cat.png", width="wide")  # E: arg-type
resize.enqueue("cat.png", height=3)  # E: call-arg
resize.enqueue()  # E: call-arg
resize.options(delay=5).enqueue("cat.png", 1, 2)  # E: call-arg
resize.job(image=b"cat.png")  # E: arg-type
send.enqueue("a@example.com", "hi")  # E: call-arg
resize.options(queue=1)  # E: arg-type
router.task(name=3)  # E: call-overload
