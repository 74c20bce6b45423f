"""Hiding the passwords of URLs on this process's own command line.

Any user of the machine can read a process's command line (``ps``, ``/proc/PID/cmdline``);
only its owner can read its environment. ``qw run --url redis://:PASSWORD@host`` would
show the password for as long as the manager runs, and so would each of its workers,
which are forked from it and inherit its command line (the URL itself reaches them with
the rest of the manager's memory, never through a command line of their own).

So ``qw`` overwrites, as it starts, each credential in its own command line with ``*``
(:func:`qw_core.urls.mask_url`: every character of it, so the line keeps its length).
On Linux the command line is memory of the process: ``/proc/self/stat`` says where, and
``/proc/self/mem`` writes it. Elsewhere, or if either cannot be used, nothing changes.
The documentation (docs/how-to/secure-redis.md) still says to prefer ``QW_URL``: a ``ps``
in the first moment sees the line as it was typed.
"""

from __future__ import annotations

from pathlib import Path

from qw_core.urls import mask_url

_PROC = Path("/proc/self")


def hide_url_secrets() -> bool:
    """Overwrite the credentials of every URL on this process's command line with ``*``.

    :return: whether the command line was changed.
    """
    try:
        start, end = _arguments_area()
        with open(_PROC / "mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            line = memory.read(end - start)
            masked = masked_command_line(line)
            if masked == line:
                return False
            memory.seek(start)
            memory.write(masked)
            return True
    except (OSError, ValueError, IndexError):
        return False


def masked_command_line(line: bytes) -> bytes:
    """``line`` (arguments separated by NUL bytes) with the credentials of each argument that
    holds a URL (``--url=URL`` too) replaced by ``*``, byte for byte."""
    text = line.decode("latin-1")  # one character per byte: positions and lengths are kept
    return "\0".join(_masked_argument(argument) for argument in text.split("\0")).encode("latin-1")


def _masked_argument(argument: str) -> str:
    if "://" not in argument:
        return argument
    if argument.startswith("-"):  # --url=URL
        flag, equals, value = argument.partition("=")
        return flag + equals + mask_url(value)
    return mask_url(argument)


def _arguments_area() -> tuple[int, int]:
    """Where this process's command line is in its memory (``arg_start``, ``arg_end``)."""
    stat = (_PROC / "stat").read_bytes()
    fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return int(fields[48 - 3]), int(fields[49 - 3])  # proc(5) numbers the fields from 1
