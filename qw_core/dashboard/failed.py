"""The failed registry as the dashboard pages, filters and acts on it.

A registry may hold tens of thousands of entries, each with a traceback, so nothing here
holds it whole: an unfiltered page is one range (:meth:`Inspector.failed_jobs_page`); a
filtered one, and an action on "all matching", walk the registry :data:`CHUNK` entries
at a time, newest first, keeping only the chunk in hand.

Acting while walking: requeueing or deleting entries of a chunk shifts the entries after
it towards the front, so the walk goes on from its position less what it removed. A job
that fails meanwhile goes to the front: the walk may read an entry twice (it acts on each
once: a requeued or deleted one is gone), and never skips one because of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from qw_core.broker import Administrator, Inspector
from qw_core.models import FailedJob, queue_label

#: Entries read at a time while filtering or acting on all matching entries.
CHUNK = 500
#: Entries a page of the failed registry lists.
PAGE = 50


@attrs.frozen(kw_only=True)
class Filter:
    """Which failed jobs a page shows, or an action applies to.

    :param exc_type: the exception's type: its full name (``builtins.ValueError``) or its
        last part (``ValueError``); empty: any.
    :param queue: the queue label (``default``, a named queue, ``manager:<m>``); empty: any.
    """

    exc_type: str = ""
    queue: str = ""

    @property
    def empty(self) -> bool:
        return not self.exc_type and not self.queue

    def matches(self, entry: FailedJob) -> bool:
        name = entry.failure.exc_type
        if self.exc_type and name != self.exc_type and not name.endswith("." + self.exc_type):
            return False
        return not self.queue or queue_label(entry.job) == self.queue


def walk(broker: Inspector, start: int = 0) -> Iterator[tuple[int, list[FailedJob]]]:
    """Chunks of the registry, newest first: (position of the chunk, its entries)."""
    position = start
    while True:
        chunk = broker.failed_jobs_page(offset=position, limit=CHUNK)
        if chunk:
            yield position, chunk
        if len(chunk) < CHUNK:
            return
        position += CHUNK


@attrs.frozen(kw_only=True)
class FailedPage:
    entries: list[FailedJob]
    offset: int
    has_next: bool
    total: int  # entries in the registry (all of them, not only the matching ones)


def page(broker: Inspector, which: Filter, offset: int) -> FailedPage:
    """The :data:`PAGE` matching entries from the ``offset``-th matching one on."""
    offset = max(0, offset)
    total = broker.failed_count()
    if which.empty:
        entries = broker.failed_jobs_page(offset=offset, limit=PAGE + 1)
        return FailedPage(entries=entries[:PAGE], offset=offset, has_next=len(entries) > PAGE, total=total)
    found: list[FailedJob] = []
    skipped = 0
    for _, chunk in walk(broker):
        for entry in chunk:
            if not which.matches(entry):
                continue
            if skipped < offset:
                skipped += 1
                continue
            found.append(entry)
            if len(found) > PAGE:
                return FailedPage(entries=found[:PAGE], offset=offset, has_next=True, total=total)
    return FailedPage(entries=found, offset=offset, has_next=False, total=total)


def count(broker: Inspector, which: Filter) -> int:
    """How many entries match (the whole registry when the filter is empty)."""
    if which.empty:
        return broker.failed_count()
    return sum(1 for _, chunk in walk(broker) for entry in chunk if which.matches(entry))


def requeue_matching(broker: Administrator, which: Filter) -> int:
    """Requeue every entry that matches, as :meth:`Administrator.requeue_failed` does; how many were.

    Unfiltered, this is :meth:`Administrator.requeue_all_failed` (in batches on the server). An
    entry that cannot be requeued (a job with its id is live) stays and is passed over.
    """
    if which.empty:
        return broker.requeue_all_failed()
    return _act(broker, which, requeue=True)


def delete_matching(broker: Administrator, which: Filter) -> int:
    """Delete every entry that matches; how many were (:meth:`Administrator.purge_all_failed`
    unfiltered)."""
    if which.empty:
        return broker.purge_all_failed()
    return _act(broker, which, requeue=False)


def _act(broker: Administrator, which: Filter, *, requeue: bool) -> int:
    # Read no further than the registry held at the start: what fails meanwhile lands in
    # front of the walk, so this bound ends it even if jobs fail as fast as it acts.
    budget = broker.failed_count() + CHUNK
    position = done = read = 0
    while read < budget:
        chunk = broker.failed_jobs_page(offset=position, limit=CHUNK)
        read += len(chunk)
        wanted = [entry.job.id for entry in chunk if which.matches(entry)]
        if requeue:
            removed = sum(1 for job_id in wanted if broker.requeue_failed(job_id))
        else:
            removed = broker.purge_failed(wanted) if wanted else 0
        done += removed
        if len(chunk) < CHUNK:
            break
        position += len(chunk) - removed
    return done


def requeue_ids(broker: Administrator, job_ids: list[str]) -> int:
    """Requeue the failed jobs ``job_ids``; how many were."""
    return sum(1 for job_id in dict.fromkeys(job_ids) if broker.requeue_failed(job_id))


def delete_ids(broker: Administrator, job_ids: list[str]) -> int:
    """Delete the failed jobs ``job_ids``; how many were."""
    return broker.purge_failed(list(dict.fromkeys(job_ids))) if job_ids else 0
