"""What an operator does to the queue: cancel, run now, retry, prune, edit a waiting task.

The admin actions and the ``background_tasks`` command only parse, call a function here and
present what it returns; each function is testable on its own.

Operator actions never wait for a row another transaction has locked (a worker claiming or
finalizing it, another operator): ``lock_free`` locks the rows they change with ``SKIP
LOCKED`` where the database has it, and the rows left out are reported as busy. SQLite has no
row locks; there a write waits for the database lock instead (up to its busy timeout), as
every writer does. Every action that makes a task ready wakes idle workers
(``wakeup.notify_ready``, on PostgreSQL) instead of leaving it for their next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from django.db import connections, models, router, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from . import isolation, lifecycle
from .enqueue import insert_task
from .logs import shown
from .models import QUARANTINED, CompletedTask, Task
from .wakeup import notify_ready

logger = logging.getLogger("background_tasks")

#: Completed tasks read per query by ``retry`` (keeps ``IN`` lists short on every database).
RETRY_CHUNK = 500

_Row = TypeVar("_Row", bound=models.Model)


def using() -> str:
    """The database operator actions read and write (the router's choice for writing a Task)."""
    return router.db_for_write(Task)


def lock_free(rows: models.QuerySet[_Row]) -> models.QuerySet[_Row]:
    """Lock ``rows`` for the current transaction, leaving out (never waiting for) rows that
    another transaction holds, such as a worker claiming or finalizing them.

    Where the database has no SKIP LOCKED (SQLite) the rows are returned as they are: there a
    write takes the database lock, so there is no row to skip.
    """
    if connections[rows.db].features.has_select_for_update_skip_locked:
        return rows.select_for_update(skip_locked=True)
    return rows


def _wake(db: str, queues: Iterable[str]) -> None:
    for queue in sorted(set(queues)):
        notify_ready(db, queue)


# --------------------------------------------------------------------------------------------
# Live tasks
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What an action did with each id it was given."""

    done: list[int] = field(default_factory=list)
    #: Held by a worker (locked_by set): cancel asks it to stop; run-now leaves it alone.
    running: list[int] = field(default_factory=list)
    #: Set aside (``locked_by = 'quarantined'``): no worker runs it, so there is nothing to
    #: cancel or make ready; it is left alone for an operator to fix and release, or delete.
    quarantined: list[int] = field(default_factory=list)
    #: Locked by another transaction at this moment: skipped, not waited for.
    busy: list[int] = field(default_factory=list)
    #: run-now only: already ready, left in place.
    unchanged: list[int] = field(default_factory=list)
    finished: dict[int, CompletedTask] = field(default_factory=dict)
    unknown: list[int] = field(default_factory=list)


def finished_as(task_ids: Sequence[int]) -> dict[int, CompletedTask]:
    """Map each id of a task that has finished to its latest CompletedTask record."""
    found: dict[int, CompletedTask] = {}
    records = (
        CompletedTask.objects.using(using()).filter(task_id__in=task_ids).order_by("finished_at")
    )
    for record in records:
        found[record.task_id] = record
    return found


def _account_for_missing(outcome: Outcome, ids: Sequence[int], seen: set[int], db: str) -> None:
    missing = [pk for pk in ids if pk not in seen]
    still_there = set(Task.objects.using(db).filter(pk__in=missing).values_list("id", flat=True))
    outcome.busy = [pk for pk in missing if pk in still_there]
    outcome.finished = finished_as([pk for pk in missing if pk not in still_there])
    outcome.unknown = [pk for pk in missing if pk not in still_there and pk not in outcome.finished]


def cancel(ids: Sequence[int], reason: str = "Cancelled by an operator.") -> Outcome:
    """Cancel waiting tasks and ask the workers running the others to stop them."""
    ids = list(dict.fromkeys(ids))
    db = using()
    outcome = Outcome()
    with transaction.atomic(using=db):
        free = dict(
            lock_free(Task.objects.using(db).filter(pk__in=ids)).values_list("id", "locked_by")
        )
        waiting = [pk for pk in ids if pk in free and free[pk] is None]
        outcome.quarantined = [pk for pk in ids if pk in free and free[pk] == QUARANTINED]
        running = [pk for pk in ids if pk in free and free[pk] not in (None, QUARANTINED)]
        if waiting:
            cancel_waiting(waiting, reason)
        if running:
            request_cancel(running)
        left = set(Task.objects.using(db).filter(pk__in=waiting).values_list("id", flat=True))
    outcome.done = [pk for pk in waiting if pk not in left]
    outcome.running = running
    _account_for_missing(outcome, ids, set(free), db)
    # A row can only stay behind if a worker took it between our read and the cancel.
    outcome.busy += [pk for pk in waiting if pk in left]
    return outcome


def cancel_waiting(
    task_ids: list[int], reason: str = "Cancelled by an operator."
) -> tuple[int, int]:
    """Cancel tasks not held by a worker; return (cancelled, held by a worker so left alone).

    Rows another transaction holds are skipped, never waited for (``lock_free``); the fence on
    ``locked_by IS NULL`` keeps rows a worker holds out everywhere.
    """
    db = using()
    cancelled = 0
    with transaction.atomic(using=db):
        rows = lock_free(Task.objects.using(db).filter(pk__in=task_ids, locked_by__isnull=True))
        for task in list(rows):
            if lifecycle.record_cancelled(task, None, reason) is not None:
                cancelled += 1
    running = Task.objects.using(db).filter(pk__in=task_ids, locked_by__isnull=False).count()
    return cancelled, running


def request_cancel(task_ids: list[int]) -> int:
    """Ask the workers running these tasks to stop them; return how many were asked.

    Rows being claimed or finalised at this moment are skipped rather than waited for.
    """
    db = using()
    with transaction.atomic(using=db):
        running = Task.objects.using(db).filter(pk__in=task_ids, locked_by__isnull=False)
        running = running.exclude(locked_by=QUARANTINED)  # nothing runs them to see it
        ids = list(lock_free(running).values_list("pk", flat=True))
        return Task.objects.using(db).filter(pk__in=ids).update(cancel_requested_at=timezone.now())


def run_now(ids: Sequence[int], now: datetime | None = None) -> Outcome:
    """Move waiting tasks' run_at to ``now``; tasks already due keep their place in the queue."""
    now = now or timezone.now()
    ids = list(dict.fromkeys(ids))
    db = using()
    outcome = Outcome()
    with transaction.atomic(using=db):
        rows = Task.objects.using(db).filter(pk__in=ids)
        free = {
            pk: (locked_by, run_at, queue)
            for pk, locked_by, run_at, queue in lock_free(rows).values_list(
                "id", "locked_by", "run_at", "queue"
            )
        }
        waiting = [pk for pk in ids if pk in free and free[pk][0] is None]
        outcome.quarantined = [pk for pk in ids if pk in free and free[pk][0] == QUARANTINED]
        outcome.running = [
            pk for pk in ids if pk in free and free[pk][0] not in (None, QUARANTINED)
        ]
        outcome.done = [pk for pk in waiting if free[pk][1] > now]
        outcome.unchanged = [pk for pk in waiting if free[pk][1] <= now]
        if outcome.done:
            Task.objects.using(db).filter(pk__in=outcome.done, locked_by__isnull=True).update(
                run_at=now
            )
            _wake(db, (free[pk][2] for pk in outcome.done))
    _account_for_missing(outcome, ids, set(free), db)
    return outcome


def update_waiting(ids: list[int], **values: Any) -> int:
    """Change fields of the given tasks no worker holds; return how many rows changed.

    A row that becomes due by it (an earlier ``run_at``) wakes the workers of its queue.
    """
    db = using()
    with transaction.atomic(using=db):
        rows = Task.objects.using(db).filter(pk__in=ids, locked_by__isnull=True)
        changed = dict(lock_free(rows).values_list("pk", "queue"))
        rows = Task.objects.using(db).filter(pk__in=list(changed), locked_by__isnull=True)
        count = int(rows.order_by().update(**values))
        run_at = values.get("run_at")
        if count and run_at is not None and run_at <= timezone.now():
            _wake(db, [values.get("queue") or queue for queue in changed.values()])
    return count


# --------------------------------------------------------------------------------------------
# Completed tasks
# --------------------------------------------------------------------------------------------


def retry_completed(completed: CompletedTask, *, now: datetime | None = None) -> Task:
    """Enqueue a fresh copy of a finished task, ready now, and wake the workers of its queue."""
    now = now or timezone.now()
    fresh = Task(**{name: getattr(completed, name) for name in lifecycle.CARRIED_FIELDS})
    fresh.run_at = now
    fresh.scheduled_at = now
    lifecycle.reset_attempts(fresh)
    fresh.created_at = now
    # A retry is a one-off: the series it came from goes on by itself (see record_failure), and
    # a second copy of the series would run every occurrence twice.
    fresh.repeat = None
    fresh.repeat_until = None
    return insert_task(fresh, using=using(), robust_signal=True)


def retry(ids: Sequence[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """Enqueue a fresh copy of each CompletedTask, in one transaction.

    Return the (completed id, new task id) pairs, and the ids that name no CompletedTask.
    """
    ids = list(dict.fromkeys(ids))
    retried: list[tuple[int, int]] = []
    unknown: list[int] = []
    with transaction.atomic(using=using()):
        for start in range(0, len(ids), RETRY_CHUNK):
            chunk = ids[start : start + RETRY_CHUNK]
            records = CompletedTask.objects.using(using()).in_bulk(chunk)
            retried += [(pk, retry_completed(records[pk]).pk) for pk in chunk if pk in records]
            unknown += [pk for pk in chunk if pk not in records]
    return retried, unknown


def failed_to_retry(name: str | None = None) -> models.QuerySet[CompletedTask]:
    """Failed records whose call (same task and arguments) was not enqueued again since.

    Leaving those out makes ``retry --all-failed`` safe to repeat: a second run does not queue
    the same calls again, whether the first run's copies are still waiting or already ran.
    "Since" includes the instant of the failure: the next occurrence of a repeating task is
    inserted with its failure, ``created_at`` equal to the record's ``finished_at``, and the
    series goes on by itself.
    """

    def since(model: type[Task] | type[CompletedTask]) -> Exists:
        calls = model.objects.using(using()).filter(
            task_hash=OuterRef("task_hash"), created_at__gte=OuterRef("finished_at")
        )
        if model is CompletedTask:
            # A record created and finished at the same instant (a coarse clock) is not a
            # later call of itself.
            calls = calls.exclude(pk=OuterRef("pk"))
        return Exists(calls)

    records = CompletedTask.objects.using(using()).failed().order_by("finished_at", "id")
    if name:
        records = records.named(name)
    fresh: models.QuerySet[CompletedTask] = records.exclude(since(Task))
    return fresh.exclude(since(CompletedTask))


def prunable(cutoff: datetime, statuses: Sequence[str]) -> models.QuerySet[CompletedTask]:
    """Completed tasks finished before ``cutoff`` (with one of ``statuses``, if any given)."""
    records: models.QuerySet[CompletedTask] = CompletedTask.objects.using(using()).filter(
        finished_at__lt=cutoff
    )
    if statuses:
        records = records.filter(status__in=statuses)
    return records


def prune(
    cutoff: datetime,
    statuses: Sequence[str],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Delete CompletedTask rows finished before ``cutoff``; return (rows deleted, batches).

    Each batch deletes a list of at most ``batch_size`` ids in its own short transaction, so a
    huge history never holds locks (or a giant undo log) for long. A batch the database
    refuses because of one of its rows (a delete receiver that cannot load a row with a date
    out of range, say) is retried row by row; a row that still fails is left in place and
    logged (``event=prune_row_skipped``), and pruning goes on with the rest.
    """
    db = using()
    deleted = batches = 0
    skipped: set[int] = set()
    while True:
        ids = list(
            prunable(cutoff, statuses)
            .exclude(pk__in=skipped)
            .order_by("finished_at", "id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted, batches
        try:
            count = _delete_records(db, ids)
        except Exception as exc:
            if isolation.is_database_fault(exc):
                raise
            count = 0
            for record_id in ids:
                try:
                    count += _delete_records(db, [record_id])
                except Exception as row_exc:
                    if isolation.is_database_fault(row_exc):
                        raise
                    skipped.add(record_id)
                    logger.error(
                        "event=prune_row_skipped completed_task_id=%s error=%s",
                        record_id,
                        shown(isolation.describe(row_exc)),
                    )
        deleted += count
        batches += 1
        if on_batch is not None:
            on_batch(deleted)


def _delete_records(db: str, ids: list[int]) -> int:
    with transaction.atomic(using=db):
        count, _ = CompletedTask.objects.using(db).filter(pk__in=ids).delete()
    return count
