"""One bad row never stops the queue: telling a row's fault from the database's, and quarantine.

Every step that handles one row outside the task body (loading rows after a claim, writing an
outcome, rescuing the tasks of lost workers, reaping a dead child) goes through here, so that a
failure caused by what the row holds (a value the history table refuses, a date the driver
cannot load, a counter at its maximum) ends that row's attempt and nothing else:

1. the attempt is recorded as failed, without retry, with the reason in ``last_error``;
2. where even that cannot be written, the row is *quarantined*: ``locked_by`` is set to
   :data:`QUARANTINED`, so no claim (they take ``locked_by IS NULL`` rows) and no rescue picks
   it again, and ``last_error`` says why. An operator fixes or deletes it.

Connection errors are the database's fault, not the row's: they propagate, and the worker's
outage handling retries the step once the database is back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.db import connections, router, transaction
from django.db.models import JSONField
from django.utils import timezone

from . import models
from .charsets import storable_for
from .logs import shown
from .models import Task
from .outage import OUTAGE_ERRORS

logger = logging.getLogger("background_tasks")

#: The ``locked_by`` of a quarantined row. Worker ids always contain ":" (host:pid:random), so
#: no worker can ever hold a row under this name.
QUARANTINED = models.QUARANTINED

#: The attempts counter stops here (the largest value of a 32-bit signed column, the smallest
#: column any supported database gives a PositiveIntegerField), so the claim never overflows it.
ATTEMPTS_CEILING = 2**31 - 1


#: How much of a value a reason quotes: a 10 MB value must not become a 10 MB error message.
REASON_LIMIT = 300


def is_database_fault(exc: BaseException) -> bool:
    """Return True if ``exc`` is the database's failure, not the row's: the step propagates it.

    Wider than :func:`outage.is_outage`: a missing table is the database's fault too, and no
    reason to record a row as failed; the worker then stops and says ``migrate`` was not run.
    """
    return isinstance(exc, OUTAGE_ERRORS)


def short(text: str, limit: int = REASON_LIMIT) -> str:
    """Return ``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters not shown)"


def describe(exc: BaseException) -> str:
    """Return ``ExceptionType: message``, cut short."""
    return short(f"{type(exc).__name__}: {exc}")


_ANY_CLAIM: Any = object()


def quarantine(
    task_id: int, holder: str | None, reason: str, *, locked_at: Any = _ANY_CLAIM
) -> bool:
    """Set a held row aside for good: no claim or rescue takes it again. Return True if done.

    Fenced by the holder, like every outcome: a row handed on meanwhile is left alone. With
    ``locked_at`` (the claim's, as read) also by the claim: an outcome of an attempt whose row
    its worker has claimed again since matches nothing.
    """
    using = router.db_for_write(Task)
    rows = Task.objects.using(using).filter(pk=task_id, locked_by=holder)
    if locked_at is not _ANY_CLAIM:
        rows = rows.filter(locked_at=locked_at)
    # The reason quotes an error, which may hold text the table's character set cannot (an
    # emoji in a utf8mb3 table): escaped, or the quarantine itself would fail.
    stored = storable_for(using, reason, what="last_error", task_id=task_id)
    updated = rows.update(locked_by=QUARANTINED, locked_at=timezone.now(), last_error=stored)
    if updated:
        logger.error(
            "event=task_quarantined task_id=%s worker=%s reason=%s",
            task_id,
            shown(holder),
            shown(reason),
        )
    return bool(updated)


def savepoint(using: str) -> AbstractContextManager[object]:
    """Guard one row's statement, so that its failure leaves a caller's transaction usable.

    Inside a transaction that is a savepoint (PostgreSQL aborts the whole transaction on a
    failed statement otherwise); in autocommit nothing is needed, and an ``atomic`` block would
    cost a ``BEGIN`` (on SQLite with IMMEDIATE transactions, the database's write lock) for a
    read.
    """
    if connections[using].in_atomic_block:
        return transaction.atomic(using=using)
    return nullcontext()


def load_held(
    ids: Sequence[int], holder: str | None, using: str, order: Sequence[str] = ("id",)
) -> list[Task]:
    """Load rows by id, held by ``holder``; quarantine those the database cannot load.

    A row can hold a value the driver refuses to convert (PostgreSQL '-infinity' or a BC
    date, a year-0 text on SQLite): loading it would fail every time, so it is set aside and
    reported instead of failing the load of every other row with it.
    """
    rows = Task.objects.using(using).filter(locked_by=holder)
    try:
        with savepoint(using):
            batch = list(rows.filter(pk__in=list(ids)).order_by(*order))
        return [task for task in batch if _complete(task, holder)]
    except Exception as exc:
        if is_database_fault(exc):
            raise
    loaded = []
    for task_id in sorted(ids):
        try:
            with savepoint(using):
                task = rows.filter(pk=task_id).first()
        except Exception as exc:
            if is_database_fault(exc):
                raise
            logger.error(
                "event=task_unloadable task_id=%s worker=%s error=%s",
                task_id,
                shown(holder),
                shown(describe(exc)),
            )
            reason = (
                "The database returned a value that cannot be loaded from this row (an "
                f"out-of-range date, say), so it cannot be run: {describe(exc)}"
            )
            quarantine(task_id, holder, reason)
            continue
        if task is not None and _complete(task, holder):
            loaded.append(task)
    return loaded


def keep_complete(tasks: Sequence[Task], holder: str | None) -> list[Task]:
    """Return the tasks that have every value their columns require; quarantine the others."""
    return [task for task in tasks if _complete(task, holder)]


def _complete(task: Task, holder: str | None) -> bool:
    """Quarantine a row missing a value its columns require; return True if it has them all.

    MySQL and MariaDB hand a zero date ('0000-00-00') to Python as None: such a row could run,
    but its outcome could never be written to the history, which requires the value.
    """
    missing = [
        field.name
        for field in task._meta.concrete_fields
        # JSON null is a value (params null means "no arguments"), not a missing one.
        if not field.null
        and not isinstance(field, JSONField)
        and getattr(task, field.attname) is None
    ]
    if not missing:
        return True
    reason = (
        f"The database returned no value for {', '.join(missing)}, which this row requires "
        "(a zero date, say), so it cannot be run."
    )
    quarantine(task.pk, holder, reason)
    return False


__all__ = [
    "ATTEMPTS_CEILING",
    "QUARANTINED",
    "describe",
    "is_database_fault",
    "keep_complete",
    "load_held",
    "quarantine",
    "savepoint",
    "short",
]
