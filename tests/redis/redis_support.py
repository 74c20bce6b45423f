"""Constants and helpers shared by the Redis backend's test modules."""

from __future__ import annotations

import socket
from typing import Any

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
#: Used by modules that do not set REDIS_DB; other modules use 10-14. (The CLI tests use 7.)
DEFAULT_DB = 9


def redis_url(db: int) -> str:
    """The URL of database ``db`` on the test server."""
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def free_port() -> int:
    """A local TCP port nothing listens on (for a Redis that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CommandCounter:
    """Counts the commands a redis-py client sends (each one is a round trip).

    Client-side, so other programs using the same server cannot disturb the count.
    """

    def __init__(self, client: Any) -> None:
        self.names: list[str] = []
        send = client.execute_command

        def counted(*args: Any, **options: Any) -> Any:
            self.names.append(str(args[0]).upper())
            return send(*args, **options)

        client.execute_command = counted

    def __len__(self) -> int:
        return len(self.names)

    def reset(self) -> None:
        self.names.clear()
