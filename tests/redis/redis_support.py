"""Constants and helpers shared by the Redis backend's test modules."""

from __future__ import annotations

from typing import Any

from qwtest_redis import REDIS_HOST, free_port, redis_url, shared_client, shared_port  # noqa: F401  (for the tests here)

#: Used by modules that do not set REDIS_DB; other modules use 10-14. (The CLI tests use 7.)
DEFAULT_DB = 9


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
