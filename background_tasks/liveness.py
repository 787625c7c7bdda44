"""Liveness of workers: registration, heartbeats, and rescue of tasks held by workers that died."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db import router, transaction
from django.db.models import Q
from django.utils import timezone

from . import isolation, lifecycle, recording
from .conf import app_settings
from .exceptions import WorkerLost
from .logs import shown
from .models import Task, Worker
from .timezones import window_start

logger = logging.getLogger("background_tasks")

WORKER_LOST = (
    "Worker lost: {worker} stopped sending heartbeats while running this task "
    "(the process was killed or its host went away)."
)


def new_worker_id() -> str:
    """Return a worker id unique across hosts, processes and restarts: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def register(worker_id: str, queues: Sequence[str], concurrency: int) -> Worker:
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        id=worker_id,
        defaults={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": list(queues),
            "concurrency": concurrency,
            "started_at": now,
            "last_heartbeat_at": now,
        },
    )
    return worker


def beat(worker_id: str, queues: Sequence[str], concurrency: int) -> None:
    """Refresh this worker's heartbeat, re-registering if a rescuer had given it up for lost."""
    if not Worker.objects.filter(id=worker_id).update(last_heartbeat_at=timezone.now()):
        logger.warning("event=worker_reregistered worker=%s", shown(worker_id))
        register(worker_id, queues, concurrency)


def unregister(worker_id: str) -> None:
    Worker.objects.filter(id=worker_id).delete()


def rescue_lost(now: datetime | None = None) -> int:
    """Release the tasks of workers whose heartbeat is stale; return how many were released.

    Each rescued attempt counts: it is recorded as failed with a "worker lost" error and then
    retried (or given up) by the task's retry policy. Rows locked by a worker id that has no
    Worker row at all (left by a worker that was never registered, or set by hand, ``''``
    included) are rescued once their lock is older than the rescue window, or at once if they
    have no lock time. Each row is handled on its own (see isolation.py): one that cannot be
    loaded or recorded is quarantined, and the others are rescued all the same.
    """
    now = now or timezone.now()
    # A live worker is never taken for lost because the clocks changed (USE_TZ = False).
    stale_before = window_start(now, timedelta(seconds=float(app_settings.RESCUE_AFTER)))
    lost = list(Worker.objects.lost(stale_before).values_list("id", flat=True))
    alive = Worker.objects.alive(stale_before).values_list("id", flat=True)
    orphaned = (Q(locked_at__lt=stale_before) | Q(locked_at__isnull=True)) & ~Q(locked_by__in=alive)
    candidates = (
        Task.objects.locked()
        .filter(Q(locked_by__in=lost) | orphaned)
        .exclude(locked_by=isolation.QUARANTINED)
    )
    using = router.db_for_write(Task)
    rescued = 0
    for task_id, holder in list(candidates.values_list("id", "locked_by")):
        for task in isolation.load_held([task_id], holder, using):
            if _rescue(task, holder):
                rescued += 1
    if lost:
        with transaction.atomic(using=router.db_for_write(Worker)):
            # Only workers still stale: one that came back meanwhile keeps its row.
            Worker.objects.filter(id__in=lost).lost(stale_before).delete()
    return rescued


def _rescue(task: Task, holder: str | None) -> bool:
    error = WORKER_LOST.format(worker=holder)
    outcome = recording.record_or_quarantine(
        task,
        holder,
        lambda: lifecycle.record_failure(task, holder, error, WorkerLost(error)),
        "The lost attempt",
    )
    if outcome is None:
        return False
    logger.warning(
        "event=task_rescued task=%s task_id=%s worker=%s",
        shown(task.task_name),
        task.pk,
        shown(holder),
    )
    return True
