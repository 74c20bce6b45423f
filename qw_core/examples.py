"""Sample targets, for a first run and for the README.

``qw run --embedded --sample-jobs 3 qw_core.examples:echo`` runs :func:`echo` on three
sample jobs with nothing else installed.
"""

from __future__ import annotations

import json
import os

from qw_core.models import JSON


def echo(job_id: str, job_data: JSON) -> None:
    """Print one line per job on stdout: the worker's pid, the job id and its data as JSON.

    Flushes at once, so the line shows up while the worker runs (stdout is a pipe, not a
    terminal, under most supervisors).
    """
    print(f"[worker {os.getpid()}] job {job_id}: {json.dumps(job_data, sort_keys=True)}", flush=True)
