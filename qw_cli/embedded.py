"""``qw run --embedded``: a Redis-protocol server inside the ``qw run`` process.

For trying qw with no Redis installed: fakeredis's TCP server (``fakeredis.TcpFakeServer``,
with lupa for the Lua scripts the redis backend uses) listens on 127.0.0.1 on a free port
in a background thread, and the manager runs the ordinary ``redis`` backend against it.
Other programs (``qw enqueue --url ...``) reach it like any Redis while ``qw run`` lives;
its data lives in memory and goes with the process.

Worker processes are forked after the server thread starts; they never touch the server
objects, only connect to it over TCP, so forking beside the thread is safe.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from qw_cli.errors import CliError

HOST = "127.0.0.1"
INSTALL_HINT = "pip install 'qw-core[embedded]'"


@contextlib.contextmanager
def embedded_redis(port: int = 0) -> Iterator[str]:
    """Serve a fake Redis on ``port`` (``0``: a free one); yield its URL
    (``redis://127.0.0.1:PORT/0``).

    :raises CliError: fakeredis (or lupa, for Lua scripting) is not installed, or the port
        is taken.
    """
    try:
        # Deferred (PLC0415): only --embedded needs them, and fakeredis is slow to import.
        # lupa is what lets fakeredis run the Lua scripts the redis backend relies on.
        import lupa  # type: ignore[import-untyped]  # noqa: F401 - see above
        from fakeredis import TcpFakeServer
    except ImportError as exc:
        raise CliError(
            f"--embedded needs fakeredis with Lua support ({exc.name} is missing): {INSTALL_HINT}"
        ) from None
    logging.getLogger("fakeredis").setLevel(logging.WARNING)  # it logs every command at DEBUG
    try:
        server = TcpFakeServer((HOST, port))
    except OSError as exc:
        raise CliError(
            f"--port {port}: cannot listen on {HOST}:{port} ({exc.strerror or exc}); "
            "pick another port, or leave --port out for a free one"
        ) from None
    server.daemon_threads = True  # a client that never hangs up must not keep the process alive
    thread = threading.Thread(target=server.serve_forever, name="qw-embedded-redis", daemon=True)
    thread.start()
    try:
        yield f"redis://{HOST}:{server.server_address[1]}/0"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
