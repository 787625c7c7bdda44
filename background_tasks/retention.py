"""History retention: every worker deletes expired CompletedTask rows, a small batch at a time.

There is no leader. Each worker runs a pruning pass now and then (``PRUNE_INTERVAL``, spread at
random so that workers started together drift apart); a pass deletes at most
``PRUNE_BATCH_SIZE`` of the oldest expired rows of each status, in one short transaction per
status. Where the database has ``SKIP LOCKED`` (PostgreSQL, MySQL, MariaDB), a pass locks its
batch with it, so two workers pruning at once take disjoint batches and neither waits for the
other. SQLite has one writer at a time: there each batch is a single ``DELETE`` statement.

A pass that filled a batch comes back soon (``CATCH_UP_DELAY``), so a large backlog drains at
a bounded pace instead of in one long delete. ``background_tasks prune`` remains for one-off
clean-ups.

A pass also keeps the dashboard's hourly summary up (``outcome_hours.keep_up``): it counts the
closed hours not counted yet (a few at most per pass), before retention can delete their rows,
and deletes summary rows past their use.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import DatabaseError, connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import outcome_hours
from .conf import app_settings
from .deadlocks import retry_deadlocks
from .models import CompletedTask

logger = logging.getLogger("background_tasks")

#: Seconds until the next pass when the last one filled a batch (more rows are expired).
CATCH_UP_DELAY = 1.0

_RETENTION_SETTINGS = {
    CompletedTask.Status.SUCCEEDED: "RETAIN_SUCCEEDED_DAYS",
    CompletedTask.Status.FAILED: "RETAIN_FAILED_DAYS",
    CompletedTask.Status.CANCELLED: "RETAIN_CANCELLED_DAYS",
}


def retention_periods() -> dict[str, timedelta]:
    """Return how long the history of each status is kept; statuses kept for ever are left out."""
    periods = {}
    for status, name in _RETENTION_SETTINGS.items():
        days = getattr(app_settings, name)
        if days is None:
            continue
        try:
            periods[str(status)] = timedelta(days=float(days))
        except OverflowError:
            continue  # longer than any timedelta (inf, say): kept for ever, as None
    return periods


def _expired(status: str, cutoff: datetime, using: str) -> QuerySet[CompletedTask]:
    # Oldest first, in the order of the (status, finished_at) index: a range scan that stops
    # after the batch, however large the history.
    return (
        CompletedTask.objects.using(using)
        .filter(status=status, finished_at__lt=cutoff)
        .order_by("finished_at")
    )


def prune_batch(status: str, cutoff: datetime, limit: int) -> int:
    """Delete at most ``limit`` of the oldest ``status`` rows finished before ``cutoff``.

    Return how many were deleted. Rows another transaction has locked (another worker's batch)
    are skipped, never waited for.
    """
    using = router.db_for_write(CompletedTask)
    connection = connections[using]
    if not connection.features.has_select_for_update_skip_locked:
        # SQLite: one statement, so the batch is chosen and deleted under one write lock.
        ids = _expired(status, cutoff, using).values("id")[:limit]
        deleted, _ = CompletedTask.objects.using(using).filter(id__in=ids).delete()
        return deleted
    if connection.vendor != "mysql" or connection.in_atomic_block:
        return _prune_locked(status, cutoff, limit, using)

    # Two workers' batches can still deadlock in InnoDB (their locking reads walk the
    # (status, finished_at) index, their deletes the rows): the batch is tried again, as a
    # claim is, rather than logged as an error.
    def read_committed_batch() -> int:
        # Under REPEATABLE READ the locking read would also lock the gap after the batch, and
        # with it the insert of every new record at the end of that range; READ COMMITTED
        # takes no gap locks. Applies to the next transaction only.
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return _prune_locked(status, cutoff, limit, using)

    return retry_deadlocks(read_committed_batch)


def _prune_locked(status: str, cutoff: datetime, limit: int, using: str) -> int:
    """Lock up to ``limit`` expired rows, skipping those others hold, and delete them."""
    with transaction.atomic(using=using):
        batch = list(
            _expired(status, cutoff, using)
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:limit]
        )
        if not batch:
            return 0
        deleted, _ = CompletedTask.objects.using(using).filter(id__in=batch).delete()
    return deleted


def prune_expired(now: datetime | None = None, batch_size: int | None = None) -> dict[str, int]:
    """Run one pruning pass: one batch per status with a retention; return rows deleted each.

    First, the dashboard's hourly summary is kept up, so that an hour is counted before
    retention deletes its rows; its failure is logged and does not stop the pruning.
    """
    now = now or timezone.now()
    try:
        outcome_hours.keep_up(now)
    except DatabaseError as exc:
        logger.warning("event=outcome_hours_error error=%r", exc)
    limit = int(app_settings.PRUNE_BATCH_SIZE if batch_size is None else batch_size)
    deleted = {}
    for status, kept in retention_periods().items():
        try:
            cutoff = now - kept
        except OverflowError:
            continue  # before the year 1: nothing finished that long ago
        deleted[status] = prune_batch(status, cutoff, limit)
    return deleted


class Pruner:
    """Decides when a worker prunes, and prunes: called from the worker's loop on every turn."""

    def __init__(
        self,
        worker_id: str,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.worker_id = worker_id
        self.clock = clock
        self.rng = rng
        # Never at start: a worker started for a few tasks (or a test) does not pay for a pass.
        self._next_pass = clock() + self._interval()

    def _interval(self) -> float:
        """``PRUNE_INTERVAL`` spread by up to half either way, so workers do not prune in step."""
        return float(app_settings.PRUNE_INTERVAL) * (0.5 + self.rng())

    def prune_if_due(self) -> None:
        """Run a pass if one is due; a database error is logged and the worker goes on."""
        if self.clock() < self._next_pass:
            return
        limit = int(app_settings.PRUNE_BATCH_SIZE)
        try:
            deleted = prune_expired(batch_size=limit)
        except DatabaseError as exc:
            # Pruning can wait: never let it stop the worker or count as a database outage.
            logger.warning("event=prune_error worker=%s error=%r", self.worker_id, exc)
            deleted = {}
        for status, count in deleted.items():
            if count:
                logger.info(
                    "event=history_pruned worker=%s status=%s deleted=%s",
                    self.worker_id,
                    status,
                    count,
                )
        backlog = any(count >= limit for count in deleted.values())
        self._next_pass = self.clock() + (
            min(CATCH_UP_DELAY, self._interval()) if backlog else self._interval()
        )
