"""Helpers for testing code that enqueues tasks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.utils import timezone

from .claims import claim_tasks
from .execution import execute
from .liveness import new_worker_id


def run_tasks(
    *, queues: Sequence[str] = (), now: datetime | None = None, max_tasks: int = 10_000
) -> int:
    """Run every task that is ready (at ``now``) in this thread; return how many ran.

    Tasks run one at a time on the caller's database connection, so this works inside a test's
    transaction. Tasks that become ready while it runs (a quick retry, a follow-up task) run too;
    ``max_tasks`` stops a task that keeps enqueuing itself from looping for ever.
    """
    worker_id = "testing:" + new_worker_id()
    ran = 0
    while ran < max_tasks:
        tasks = claim_tasks(worker_id, queues, 1, now=now or timezone.now())
        if not tasks:
            break
        execute(tasks[0], worker_id)
        ran += 1
    return ran
