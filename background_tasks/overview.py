"""What the admin dashboard shows, read in a few cheap queries.

The live table is small; the history can hold millions of rows, so every query on it reads a
range of the (status, finished_at) index: the last hour of outcomes, or the latest failures.
The day chart's closed hours are read from their summary (``outcome_hours``), counted once per
hour. Nothing here counts or scans the whole history, nor a whole day of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.db import router
from django.db.models import Count, Min, Q
from django.db.models.functions import TruncMinute

from . import outcome_hours
from .conf import app_settings
from .models import CompletedTask, Schedule, Task, Worker
from .states import TaskState, state_q
from .timezones import window_start

SUCCEEDED = str(CompletedTask.Status.SUCCEEDED)
FAILED = str(CompletedTask.Status.FAILED)


@dataclass(frozen=True)
class QueueState:
    """Live tasks of one queue: a count per state, and since when the oldest due one waits."""

    queue: str
    counts: dict[str, int]
    oldest_due_at: datetime | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def cells(self) -> list[tuple[str, int]]:
        """The counts in the order of TaskState."""
        return [(state, self.counts[state]) for state in TaskState.values]


@dataclass(frozen=True)
class Bucket:
    """Outcomes recorded in one minute or hour."""

    start: datetime
    succeeded: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Failure:
    id: int
    name: str
    queue: str
    finished_at: datetime
    summary: str


@dataclass(frozen=True)
class RunningTask:
    id: int
    name: str
    locked_at: datetime | None
    cancel_requested: bool


@dataclass(frozen=True)
class WorkerState:
    worker: Worker
    alive: bool
    running: list[RunningTask] = field(default_factory=list)


def _using() -> str:
    return router.db_for_write(Task)


def queue_states(now: datetime) -> list[QueueState]:
    """Count live tasks per queue in each TaskState, in one query.

    "Oldest due" covers every row no worker holds whose run time has come: fresh ones and
    retries alike, since both wait for a worker.
    """
    counts: dict[str, Any] = {
        state: Count("id", filter=state_q(state, now)) for state in TaskState.values
    }
    due = Q(locked_by__isnull=True, run_at__lte=now)
    rows = (
        Task.objects.using(_using())
        .order_by()
        .values("queue")
        .annotate(oldest_due_at=Min("run_at", filter=due), **counts)
        .order_by("queue")
    )
    return [
        QueueState(
            queue=row["queue"],
            counts={state: row[state] for state in TaskState.values},
            oldest_due_at=row["oldest_due_at"],
        )
        for row in rows
    ]


def _key(moment: datetime) -> datetime:
    """Compare bucket starts as naive UTC (aware) or as they are (USE_TZ = False)."""
    if moment.tzinfo is not None:
        return moment.astimezone(dt_timezone.utc).replace(tzinfo=None)
    return moment


@dataclass(frozen=True)
class Charts:
    """Outcomes per minute over the last hour and per hour over the last day, oldest first."""

    minutes: list[Bucket]
    hours: list[Bucket]


def _per_minute(since: datetime) -> dict[tuple[datetime, str], int]:
    """Count successes and failures per minute from ``since`` on: one index range."""
    rows = (
        CompletedTask.objects.using(_using())
        .filter(status__in=[SUCCEEDED, FAILED], finished_at__gte=since)
        .order_by()
        .annotate(minute=TruncMinute("finished_at", tzinfo=dt_timezone.utc))
        .values("minute", "status")
        # COUNT(*), not COUNT(id): the (status, finished_at) index answers it alone.
        .annotate(n=Count("*"))
    )
    return {(_key(row["minute"]), row["status"]): row["n"] for row in rows if row["minute"]}


def outcome_charts(now: datetime) -> Charts:
    """Return succeeded and failed outcomes per minute (60) and per hour (24) up to ``now``.

    Closed hours come from their summary (``outcome_hours``; a missing one is counted and
    stored now). One live query counts per minute from the start of the minute chart, or of
    the oldest hour not closed yet when that is earlier: it serves the minute chart and the
    open hours of the day chart. Buckets are UTC minutes and hours (local wall-clock ones with
    USE_TZ = False).
    """
    if now.tzinfo is not None:
        now = now.astimezone(dt_timezone.utc)
    first_minute = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    hours = outcome_hours.window(now)
    closed = [hour for hour in hours if outcome_hours.is_closed(hour, now)]
    open_hours = [hour for hour in hours if not outcome_hours.is_closed(hour, now)]
    summary = outcome_hours.summarise(closed)
    live = _per_minute(min([first_minute, *open_hours]))

    minutes = []
    for index in range(60):
        start = first_minute + timedelta(minutes=index)
        minutes.append(
            Bucket(
                start,
                succeeded=live.get((_key(start), SUCCEEDED), 0),
                failed=live.get((_key(start), FAILED), 0),
            )
        )
    live_hours: dict[tuple[datetime, str], int] = {}
    for (minute, status), n in live.items():
        key = (minute.replace(minute=0), status)
        live_hours[key] = live_hours.get(key, 0) + n
    per_hour = []
    for hour in hours:
        if hour in summary:
            row = summary[hour]
            per_hour.append(Bucket(hour, succeeded=row.succeeded, failed=row.failed))
        else:  # not closed yet: counted live
            per_hour.append(
                Bucket(
                    hour,
                    succeeded=live_hours.get((_key(hour), SUCCEEDED), 0),
                    failed=live_hours.get((_key(hour), FAILED), 0),
                )
            )
    return Charts(minutes=minutes, hours=per_hour)


def error_summary(error: str, limit: int = 200) -> str:
    """Return the line of an error worth showing: a traceback's exception line, else the first."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def latest_failures(limit: int = 10) -> list[Failure]:
    """Return the tasks that gave up most recently, newest first."""
    rows = (
        CompletedTask.objects.using(_using())
        .filter(status=FAILED)
        .order_by("-finished_at")
        .only("id", "task_name", "verbose_name", "queue", "finished_at", "last_error")[:limit]
    )
    return [
        Failure(
            id=row.pk,
            name=str(row),
            queue=row.queue,
            finished_at=row.finished_at,
            summary=error_summary(row.last_error),
        )
        for row in rows
    ]


def worker_states(now: datetime, running_limit: int = 500) -> list[WorkerState]:
    """Return every registered worker, alive ones first, with the tasks each one holds."""
    stale_before = window_start(now, timedelta(seconds=float(app_settings.RESCUE_AFTER)))
    held = (
        Task.objects.using(_using())
        .filter(locked_by__isnull=False)
        .order_by("locked_at", "id")
        .values_list(
            "id", "task_name", "verbose_name", "locked_by", "locked_at", "cancel_requested_at"
        )
    )
    by_worker: dict[str, list[RunningTask]] = {}
    for pk, task_name, verbose_name, locked_by, locked_at, cancel_at in held[:running_limit]:
        by_worker.setdefault(str(locked_by), []).append(
            RunningTask(pk, verbose_name or task_name, locked_at, cancel_at is not None)
        )
    states = [
        WorkerState(worker, worker.last_heartbeat_at >= stale_before, by_worker.get(worker.id, []))
        for worker in Worker.objects.using(_using()).order_by("host", "pid", "id")
    ]
    return sorted(states, key=lambda state: not state.alive)


def next_ticks(limit: int = 10) -> list[Schedule]:
    """Return the enabled cron schedules that fire next, soonest first (orphaned ones do not)."""
    return list(
        Schedule.objects.using(_using())
        .filter(enabled=True, orphaned_at__isnull=True, next_fire_at__isnull=False)
        .order_by("next_fire_at", "name")[:limit]
    )
