"""One virtualenv per peer under ``bench/.venvs/``, installed from PyPI with pip.

A venv is reused while the marker file inside it lists the same requirements; delete
``bench/.venvs/`` (or pass ``--reinstall``) to start over. Everything pip prints goes to
``<venv>/install.log``, which an install failure points to.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from peers import COMMON, Peer

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
MARKER = "bench-requirements.txt"


class InstallFailed(Exception):
    """A peer could not be installed; the message says where the log is."""


def python_for(peer: Peer) -> Path:
    """The interpreter ``peer`` runs with (qw: the one running the harness)."""
    if peer.venv is None:
        return Path(sys.executable)
    return VENVS / peer.venv / "bin" / "python"


def ensure(peer: Peer, *, reinstall: bool = False, timeout: float = 900) -> Path:
    """Install ``peer`` into its venv unless it is there already; return its interpreter.

    :raises InstallFailed: venv creation or pip failed (or took longer than ``timeout``).
    """
    python = python_for(peer)
    if peer.venv is None:
        return python
    venv = VENVS / peer.venv
    wanted = "\n".join((*peer.requirements, *COMMON)) + "\n"
    marker = venv / MARKER
    if not reinstall and python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if venv.exists():
        shutil.rmtree(venv)
    VENVS.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    log = venv.with_suffix(".install.log")
    steps = [
        [base, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-U", "pip"],
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", *peer.requirements, *COMMON],
    ]
    with log.open("w") as out:
        for step in steps:
            out.write(f"$ {' '.join(step)}\n")
            out.flush()
            try:
                code = subprocess.run(
                    step, check=False, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
                ).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise InstallFailed(f"{exc} (see {log})") from exc
            if code != 0:
                raise InstallFailed(f"{step[2] if len(step) > 2 else step[0]} exited {code} (see {log})")
    marker.write_text(wanted)
    return python
