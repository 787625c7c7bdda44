"""The history's outcomes per closed hour, counted once, for the dashboard's day chart.

Counting a day of outcomes on every page load costs what the day held (a million outcomes: a
second). Instead each hour is counted once, after it has closed, and the counts are kept in
``OutcomeHour``: one row per hour, unique on the hour. A page load then reads at most 24 small
rows and counts live only the hours not closed yet.

An hour ``[H, H+1h)`` is closed once ``SETTLE`` has passed after its end. The delay covers an
outcome whose ``finished_at`` was taken just before the hour ended but whose row was committed
just after it (a slow commit, a retried write), and clocks of the workers' hosts a little behind
the dashboard's. An outcome that reaches the history later than that, into an hour already
counted, is in the history but not in that hour's count.

Who counts: every worker's pruning pass (a few hours at most per pass), and the dashboard for
any closed hour of its window still missing. Both may count the same hour at once: the insert
ignores a row that already exists, so the first stored count stays and nothing fails. Rows
older than ``KEEP`` are deleted by the pruning pass; the counts stay what the history held when
the hour was counted, even after retention has pruned the rows themselves.

Hours are UTC hours with ``USE_TZ = True`` and wall-clock hours of ``TIME_ZONE`` (as the
columns store them) with ``USE_TZ = False``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.db import DatabaseError, router, transaction
from django.db.models import Count

from .models import CompletedTask, OutcomeHour

logger = logging.getLogger("background_tasks")

HOUR = timedelta(hours=1)
#: How long after its end an hour is still counted live, not summarised (see above).
SETTLE = timedelta(minutes=5)
#: How long summary rows are kept: the day chart needs 24 hours; the rest is margin.
KEEP = timedelta(days=2)
#: Hours of the chart's window (the current one included).
WINDOW = 24
#: Missing hours one pruning pass counts at most, so that a pass stays short; a worker started
#: after a long stop fills the day in a few passes (the dashboard counts what is still missing).
HOURS_PER_PASS = 4

_STATUSES = [str(status) for status in CompletedTask.Status]


def _using() -> str:
    return router.db_for_write(OutcomeHour)


def hour_of(moment: datetime) -> datetime:
    """Return the start of the hour ``moment`` falls in: a UTC hour when ``moment`` is aware."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt_timezone.utc)
    return moment.replace(minute=0, second=0, microsecond=0)


def window(now: datetime, count: int = WINDOW) -> list[datetime]:
    """Return the starts of the ``count`` hours up to the one ``now`` falls in, oldest first."""
    last = hour_of(now)
    return [last - HOUR * (count - 1 - index) for index in range(count)]


def is_closed(hour: datetime, now: datetime) -> bool:
    """Whether the hour starting at ``hour`` is over, settle delay included."""
    return hour + HOUR + SETTLE <= now


def count_hour(hour: datetime) -> OutcomeHour:
    """Count the outcomes of one hour (unsaved): three index range counts in one query."""
    rows = (
        CompletedTask.objects.using(_using())
        .filter(status__in=_STATUSES, finished_at__gte=hour, finished_at__lt=hour + HOUR)
        .order_by()
        .values("status")
        # COUNT(*), not COUNT(id): the (status, finished_at) index answers it alone.
        .annotate(n=Count("*"))
    )
    counts = {row["status"]: row["n"] for row in rows}
    return OutcomeHour(hour=hour, **{status: counts.get(status, 0) for status in _STATUSES})


def _store(rows: list[OutcomeHour]) -> None:
    """Insert the counted hours; an hour another process stored meanwhile is left as it is."""
    using = _using()
    try:
        # A savepoint when the caller is in a transaction (ATOMIC_REQUESTS): a failed insert
        # leaves it usable.
        with transaction.atomic(using=using):
            OutcomeHour.objects.using(using).bulk_create(rows, ignore_conflicts=True)
    except DatabaseError as exc:
        # The counts are still right for this caller; the next one counts again.
        logger.warning("event=outcome_hours_not_stored hours=%s error=%r", len(rows), exc)


def summarise(hours: list[datetime], limit: int | None = None) -> dict[datetime, OutcomeHour]:
    """Return the counts of these closed hours, counting and storing the ones not stored yet.

    At most ``limit`` missing hours are counted (None: all); the others are left out.
    """
    if not hours:
        return {}
    known = {
        row.hour: row
        for row in OutcomeHour.objects.using(_using()).filter(
            hour__gte=min(hours), hour__lte=max(hours)
        )
    }
    missing = [hour for hour in hours if hour not in known]
    if limit is not None:
        missing = missing[-limit:] if limit > 0 else []  # the latest first: the chart's edge
    counted = [count_hour(hour) for hour in missing]
    if counted:
        _store(counted)
        known.update((row.hour, row) for row in counted)
    return known


def keep_up(now: datetime, limit: int = HOURS_PER_PASS) -> int:
    """Count a few missing closed hours of the chart's window and delete expired summary rows.

    Return how many closed hours of the window are still missing.
    """
    closed = [hour for hour in window(now) if is_closed(hour, now)]
    known = summarise(closed, limit)
    OutcomeHour.objects.using(_using()).filter(hour__lt=hour_of(now) - KEEP).delete()
    return sum(1 for hour in closed if hour not in known)
