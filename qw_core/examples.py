"""Sample targets, for a first run and for the README.

``qw run --embedded --sample-jobs 3 qw_core.examples:echo`` runs :func:`echo` on three
sample jobs with nothing else installed.
"""

from __future__ import annotations

import json
import os
import sys

from qw_core.models import JSON


def echo(job_id: str, job_data: JSON) -> None:
    """Print one line per job on stdout: the worker's pid, the job id and its data as JSON.

    The line goes out in one ``write`` with its newline and is flushed at once: every worker
    shares the manager's stdout, and ``print`` writes the text and the newline separately, so
    under an unbuffered stdout two workers' lines could interleave. One write of a short line
    to a pipe is atomic.
    """
    line = f"[worker {os.getpid()}] job {job_id}: {json.dumps(job_data, sort_keys=True)}\n"
    sys.stdout.write(line)
    sys.stdout.flush()
