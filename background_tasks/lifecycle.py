"""State changes of a task after it is claimed, each one transaction, fenced by the worker id.

A worker records an outcome only while it still holds the row (``WHERE id = .. AND locked_by
= <worker>``): if the row was rescued and handed on meanwhile, the stale worker's write matches
nothing and is dropped, so every attempt is finalised once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import router, transaction
from django.db.models import F
from django.utils import timezone

from . import schedule as schedule_maths
from . import signals
from .conf import app_settings
from .models import CompletedTask, Task, TaskBase
from .registry import registry
from .retry import retry_delay

if TYPE_CHECKING:
    from .registry import TaskFunction

logger = logging.getLogger("background_tasks")

_COPIED_FIELDS = [f.name for f in TaskBase._meta.concrete_fields if f.name != "id"]


def max_attempts_of(task: Task) -> int:
    """Return the attempt budget: the row's, else its task function's, else the setting."""
    if task.max_attempts:
        return task.max_attempts
    if task.task_name in registry:
        configured = registry.get(task.task_name).max_attempts
        if configured:
            return configured
    return int(app_settings.MAX_ATTEMPTS)


def _using() -> str:
    return router.db_for_write(Task)


def _held(task: Task, worker_id: str | None) -> Any:
    return Task.objects.using(_using()).filter(pk=task.pk, locked_by=worker_id)


def _record(
    task: Task, status: str, worker_id: str | None, now: datetime, *, save: bool, **fields: Any
) -> CompletedTask:
    values = {name: getattr(task, name) for name in _COPIED_FIELDS}
    values.update(fields)
    completed = CompletedTask(
        task_id=task.pk,
        status=status,
        worker=worker_id or "",
        started_at=task.locked_at,
        finished_at=now,
        **values,
    )
    if save:
        completed.save(using=_using(), force_insert=True)
    return completed


def _storable_text(text: str) -> str:
    """Return ``text`` with NUL characters escaped, since PostgreSQL text columns refuse them.

    An error message is written by the worker, after the task ran: a write that can never
    succeed would be retried for ever and keep the task held.
    """
    return text.replace("\x00", "\\x00")


def _schedule_next_occurrence(task: Task, now: datetime) -> Task | None:
    """Insert the next run of a repeating task; computed from its grid, so it never drifts."""
    if not task.repeat:
        return None
    anchor = task.repeat_anchor or task.scheduled_at or task.run_at
    due = task.scheduled_at or task.run_at
    next_at = schedule_maths.next_repeat(
        anchor, task.repeat, max(due, now), timezone.get_current_timezone()
    )
    if task.repeat_until is not None and next_at > task.repeat_until:
        return None
    follower = Task(
        **{name: getattr(task, name) for name in _COPIED_FIELDS},
        scheduled_at=next_at,
        repeat_anchor=anchor,
        unique_key=task.unique_key,
    )
    follower.run_at = next_at
    follower.attempts = 0
    follower.last_error = ""
    follower.created_at = now
    follower.save(using=_using(), force_insert=True)
    return follower


def archive(
    task: Task,
    status: str,
    worker_id: str | None,
    *,
    now: datetime | None = None,
    schedule_next: bool = True,
    keep: bool = True,
    **fields: Any,
) -> CompletedTask | None:
    """Move a held task to CompletedTask; return None if this worker no longer holds it.

    With ``keep=False`` the row is only deleted: the record returned is not saved (no pk).
    """
    now = now or timezone.now()
    with transaction.atomic(using=_using()):
        # The fenced delete comes first: it is the write that proves we still own the row.
        deleted, _ = _held(task, worker_id).delete()
        if not deleted:
            _log_dropped(task, worker_id)
            return None
        completed = _record(task, status, worker_id, now, save=keep, **fields)
        if schedule_next:
            _schedule_next_occurrence(task, now)
    return completed


def record_success(
    task: Task, worker_id: str, result: Any, *, now: datetime | None = None
) -> CompletedTask | None:
    """Record a returned attempt: the task moves to CompletedTask as succeeded.

    With ``RECORD_SUCCEEDED = False`` the row is deleted and no record is kept; the signal then
    carries an unsaved record.
    """
    completed = archive(
        task,
        CompletedTask.Status.SUCCEEDED,
        worker_id,
        now=now,
        keep=bool(app_settings.RECORD_SUCCEEDED),
        result=result,
    )
    if completed is not None:
        signals.emit(
            signals.task_succeeded,
            sender=task.task_name,
            task=task,
            completed=completed,
            result=result,
        )
    return completed


def record_failure(
    task: Task,
    worker_id: str | None,
    error: str,
    exception: BaseException | None,
    *,
    permanent: bool = False,
    now: datetime | None = None,
) -> str | None:
    """Record a failed attempt: retry later with backoff, or give up. Return what happened.

    The answer is "retry", "gave_up", or None when this worker no longer held the row.
    """
    now = now or timezone.now()
    error = _storable_text(error)
    gives_up = permanent or task.attempts >= max_attempts_of(task)
    if gives_up:
        completed = archive(
            task,
            CompletedTask.Status.FAILED,
            worker_id,
            now=now,
            last_error=error,
            schedule_next=bool(app_settings.REPEAT_AFTER_FAILURE),
        )
        if completed is None:
            return None
        _emit_failed(task, exception, error, will_retry=False)
        signals.emit(
            signals.task_gave_up,
            sender=task.task_name,
            task=task,
            completed=completed,
            exception=exception,
        )
        return "gave_up"
    if _cancel_requested(task):
        # An operator asked to stop it: a failure is no reason to try again.
        return (
            "cancelled"
            if record_cancelled(task, worker_id, f"Cancelled while running.\n\n{error}")
            else None
        )
    delay = _retry_delay_of(task)
    updated = _held(task, worker_id).update(
        locked_by=None, locked_at=None, last_error=error, run_at=now + delay
    )
    if not updated:
        _log_dropped(task, worker_id)
        return None
    task.locked_by, task.locked_at, task.last_error, task.run_at = None, None, error, now + delay
    _emit_failed(task, exception, error, will_retry=True)
    return "retry"


def _emit_failed(
    task: Task, exception: BaseException | None, error: str, *, will_retry: bool
) -> None:
    signals.emit(
        signals.task_failed,
        sender=task.task_name,
        task=task,
        exception=exception,
        traceback=error,
        will_retry=will_retry,
    )


def _log_dropped(task: Task, worker_id: str | None) -> None:
    """Note an outcome not written because the row was rescued and handed on meanwhile."""
    logger.warning("event=outcome_dropped task_id=%s worker=%s reason=not_held", task.pk, worker_id)


def record_cancelled(task: Task, worker_id: str | None, reason: str = "") -> CompletedTask | None:
    """Move a task to CompletedTask as cancelled; a repeating series ends with it."""
    # The reason goes first; the error of an earlier failed attempt, if any, is kept below it.
    error = (
        f"{reason}\n\nLast error before the cancel:\n{task.last_error}"
        if task.last_error
        else reason
    )
    completed = archive(
        task,
        CompletedTask.Status.CANCELLED,
        worker_id,
        last_error=_storable_text(error),
        schedule_next=False,
    )
    if completed is not None:
        signals.emit(signals.task_cancelled, sender=task.task_name, task=task, completed=completed)
    return completed


def release(tasks: list[Task], worker_id: str) -> int:
    """Hand unfinished tasks back to the queue without counting the attempt (clean shutdown)."""
    ids = [t.pk for t in tasks]
    if not ids:
        return 0
    return (
        Task.objects.using(_using())
        .filter(pk__in=ids, locked_by=worker_id)
        .update(locked_by=None, locked_at=None, attempts=F("attempts") - 1)
    )


def _cancel_requested(task: Task) -> bool:
    if task.cancel_requested_at is not None:
        return True
    return (
        Task.objects.using(_using()).filter(pk=task.pk, cancel_requested_at__isnull=False).exists()
    )


def _backoff_of(task: Task) -> Any:
    if task.task_name in registry:
        function: TaskFunction[Any, Any] = registry.get(task.task_name)
        return function.backoff
    return None


def _retry_delay_of(task: Task) -> timedelta:
    """Return the task's retry delay, falling back to the default backoff if its own fails.

    A task's backoff function is user code: if it raises or returns junk, the attempt must
    still be recorded, or the row would stay held by a live worker and never run again.
    """
    try:
        return retry_delay(_backoff_of(task), task.attempts)
    except Exception as exc:
        logger.error(
            "event=backoff_failed task=%s task_id=%s error=%r", task.task_name, task.pk, exc
        )
        return retry_delay(None, task.attempts)


def cancel_waiting(
    task_ids: list[int], reason: str = "Cancelled by an operator."
) -> tuple[int, int]:
    """Cancel tasks not held by a worker; return (cancelled, held by a worker so left alone).

    Rows a worker holds are skipped and never waited for (SKIP LOCKED where the database has
    it; the fence on ``locked_by IS NULL`` everywhere).
    """
    using = _using()
    cancelled = 0
    with transaction.atomic(using=using):
        rows = Task.objects.using(using).filter(pk__in=task_ids, locked_by__isnull=True)
        if _supports_skip_locked(using):
            rows = rows.select_for_update(skip_locked=True)
        for task in list(rows):
            if record_cancelled(task, None, reason) is not None:
                cancelled += 1
    running = Task.objects.using(using).filter(pk__in=task_ids, locked_by__isnull=False).count()
    return cancelled, running


def request_cancel(task_ids: list[int]) -> int:
    """Ask the workers running these tasks to stop them; return how many were asked.

    Rows being claimed or finalised at this moment are skipped rather than waited for.
    """
    using = _using()
    with transaction.atomic(using=using):
        running = Task.objects.using(using).filter(pk__in=task_ids, locked_by__isnull=False)
        if _supports_skip_locked(using):
            running = running.select_for_update(skip_locked=True)
        ids = list(running.values_list("pk", flat=True))
        return (
            Task.objects.using(using).filter(pk__in=ids).update(cancel_requested_at=timezone.now())
        )


def retry_completed(completed: CompletedTask, *, now: datetime | None = None) -> Task:
    """Enqueue a fresh copy of a finished task, ready now."""
    now = now or timezone.now()
    fresh = Task(**{name: getattr(completed, name) for name in _COPIED_FIELDS})
    fresh.run_at = now
    fresh.scheduled_at = now
    fresh.attempts = 0
    fresh.last_error = ""
    fresh.created_at = now
    # A retry is a one-off: the series it came from goes on by itself (see record_failure), and
    # a second copy of the series would run every occurrence twice.
    fresh.repeat = None
    fresh.repeat_until = None
    fresh.save(using=_using(), force_insert=True)
    signals.emit(signals.task_created, sender=fresh.task_name, task=fresh)
    return fresh


def _supports_skip_locked(using: str) -> bool:
    from django.db import connections

    return bool(connections[using].features.has_select_for_update_skip_locked)


__all__ = [
    "archive",
    "cancel_waiting",
    "max_attempts_of",
    "record_cancelled",
    "record_failure",
    "record_success",
    "release",
    "request_cancel",
    "retry_completed",
]
