"""Operators' view of cron schedules: list them, pause and resume one.

The admin's enable/disable actions and ``background_tasks schedules`` both come here. A pause
is the ``enabled`` flag, which the sync at worker start never touches, so a paused schedule
defined in code or settings stays paused across deploys (a worker that does not define it
marks it orphaned rather than deleting it, so not even an older version's worker loses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import router
from django.db.models import Exists, OuterRef, Subquery

from . import periodic
from .models import CompletedTask, Schedule, Task


@dataclass(frozen=True)
class Change:
    """What a pause or resume did to one schedule."""

    schedule: Schedule
    #: False when the schedule already was in the wanted state (nothing was written).
    changed: bool


def _using() -> str:
    return router.db_for_write(Schedule)


def overview() -> list[dict[str, Any]]:
    """Describe every schedule: its timing, its next tick, and its last tick and task."""
    using = _using()
    completed = (
        CompletedTask.objects.using(using)
        .filter(task_id=OuterRef("last_task_id"))
        .order_by("-finished_at", "-id")
    )
    rows = (
        Schedule.objects.using(using)
        .annotate(
            last_task_pending=Exists(Task.objects.using(using).filter(pk=OuterRef("last_task_id"))),
            last_task_status=Subquery(completed.values("status")[:1]),
        )
        .order_by("name")
    )
    described = []
    for schedule in rows:
        fires = schedule.enabled and schedule.orphaned_at is None
        if schedule.last_task_id is None:
            last_status = None
        elif schedule.last_task_pending:
            last_status = "pending"
        else:
            last_status = schedule.last_task_status or "no longer recorded"
        described.append(
            {
                "name": schedule.name,
                "task": schedule.task_name,
                "cron": schedule.cron,
                "time_zone": schedule.time_zone,
                "enabled": schedule.enabled,
                "orphaned_at": schedule.orphaned_at,
                "source": schedule.source,
                "catch_up": schedule.catch_up,
                "queue": schedule.queue,
                "next_fire_at": schedule.next_fire_at if fires else None,
                "last_fired_at": schedule.last_fired_at,
                "last_task_id": schedule.last_task_id,
                "last_task_status": last_status,
            }
        )
    return described


def pause(schedule: Schedule, now: datetime) -> Change:
    """Stop ``schedule`` from firing; its next tick is kept (and moved on by a resume)."""
    changed = (
        Schedule.objects.using(_using())
        .filter(pk=schedule.pk, enabled=True)
        .update(enabled=False, updated_at=now)
    )
    return Change(schedule, bool(changed))


def resume(schedule: Schedule, now: datetime) -> Change:
    """Let ``schedule`` fire again from its next tick after ``now``: ticks missed while it was
    paused are not caught up. Raise ValueError if its cron or time zone is no longer valid."""
    next_fire_at = periodic.first_fire(schedule, now)
    # Compare-and-set: a schedule resumed meanwhile keeps the tick it already has.
    changed = (
        Schedule.objects.using(_using())
        .filter(pk=schedule.pk, enabled=False)
        .update(enabled=True, next_fire_at=next_fire_at, updated_at=now)
    )
    return Change(schedule, bool(changed))


def find(name: str) -> Schedule | None:
    return Schedule.objects.using(_using()).filter(name=name).first()


__all__ = ["Change", "find", "overview", "pause", "resume"]
