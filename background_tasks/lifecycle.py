"""State changes of a task after it is claimed, each one transaction, fenced by the claim.

A worker records an outcome only while it still holds the row from the claim it ran (``WHERE
id = .. AND locked_by = <worker> AND locked_at = <that claim's>``): if the row was rescued and
handed on meanwhile, or claimed again by the same worker, the stale write matches nothing and
is dropped, so every attempt is finalised once.

Over 400 lines on purpose: every state change here uses the same fence, archive and signal
helpers, and one module keeps "what can happen to a claimed row" readable in one place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.db import DataError, IntegrityError, connections, router, transaction
from django.db.models import F, Q, QuerySet
from django.dispatch import Signal
from django.utils import timezone

from . import archive_sql, isolation, signals, timing
from .charsets import storable_for
from .conf import app_settings
from .exceptions import TaskCancelled, TaskInterrupted
from .logs import shown
from .models import CompletedTask, Task, TaskBase, empty_params
from .options import options_of
from .outcomes import Outcome
from .retry import retry_delay
from .short_transactions import short_transaction
from .timezones import aware, first_storable, to_db

logger = logging.getLogger("background_tasks")

_COPIED_FIELDS = [f.name for f in TaskBase._meta.concrete_fields if f.name != "id"]
#: What a new occurrence or a retry takes from its original: not the progress it reported.
CARRIED_FIELDS = [name for name in _COPIED_FIELDS if not name.startswith("progress_")]


class _Shared(threading.local):
    """This thread's :func:`shared_transaction`, if one is open: what waits for its commit."""

    pending: list[Callable[[], None]] | None = None


_shared = _Shared()


@contextmanager
def shared_transaction(
    using: str, *, group_moves: bool = False
) -> Iterator[list[Callable[[], None]]]:
    """Open one transaction for an outcome and what the caller adds to it (the next claim).

    The outcome's writes take no savepoint of their own: whatever fails inside rolls the whole
    transaction back, outcome and all, and the caller records the outcome again alone. What an
    outcome does once written (its signals, the task object's new state) waits for the commit:
    the list yielded holds it, and the caller passes it to :func:`after_commit` once the
    transaction has committed (after taking note of its claim), never if it rolled back.

    ``group_moves``: the outcomes' moves to the history go together at the end of the block
    where the database allows it (``archive_sql.grouped_moves``, MariaDB); a row found no
    longer held then raises ``archive_sql.MovesNotHeld``, and the caller records each outcome
    again alone, as after any error.
    """
    if _shared.pending is not None:
        raise RuntimeError("shared_transaction() does not nest")
    pending: list[Callable[[], None]] = []
    _shared.pending = pending
    try:
        with short_transaction(using), _moves_grouped(using, group_moves):
            yield pending
    except BaseException:
        pending.clear()  # rolled back: none of it happened
        raise
    finally:
        _shared.pending = None


@contextmanager
def _moves_grouped(using: str, group: bool) -> Iterator[None]:
    if not group:
        yield
        return
    with archive_sql.grouped_moves(connections[using]):
        yield


def after_commit(pending: list[Callable[[], None]]) -> None:
    """Do what a committed shared transaction's outcome held back, in order."""
    for step in pending:
        step()


def _later(step: Callable[[], None]) -> None:
    """Do ``step`` now, or once the shared transaction it is part of commits."""
    if _shared.pending is not None:
        _shared.pending.append(step)
    else:
        step()


def _emit(signal: Signal, sender: str, **kwargs: Any) -> None:
    """Send an outcome's signal now, or once the shared transaction it is part of commits."""
    _later(lambda: signals.emit(signal, sender=sender, **kwargs))


def max_attempts_of(task: Task) -> int:
    """Return the attempt budget: the row's, else its task function's, else the setting."""
    return options_of(task).max_attempts


def _using() -> str:
    return router.db_for_write(Task)


def _held(task: Task, worker_id: str | None) -> Any:
    """The row of ``task`` if ``worker_id`` still holds it from the claim ``task`` was read at.

    ``locked_at`` is set afresh by each claim, so (holder, locked_at) names one claim: a write
    for an attempt whose row the same worker has claimed again since matches nothing.
    """
    return Task.objects.using(_using()).filter(
        pk=task.pk, locked_by=worker_id, locked_at=task.locked_at
    )


#: What a history record copies from its task, by attribute (a foreign key by its id: reading
#: the related object would cost a query).
_RECORD_COPIED = [f.attname for f in TaskBase._meta.concrete_fields if f.name != "id"]


@cache
def _record_fields() -> tuple[tuple[str, Any], ...]:
    """The history record's fields in the model's order: (attribute, field)."""
    return tuple((f.attname, f) for f in CompletedTask._meta.concrete_fields)


@cache
def _record_names() -> frozenset[str]:
    return frozenset(name for name, _ in _record_fields())


def _record(
    task: Task, status: str, worker_id: str | None, now: datetime, **fields: Any
) -> CompletedTask:
    """Return the (unsaved) history record of ``task``'s outcome."""
    values = {name: getattr(task, name) for name in _RECORD_COPIED}
    if values["params"] is None:
        values["params"] = empty_params()  # as _copied() writes it
    if task.locked_at is not None:  # this attempt ran (a cancel of a waiting task did not)
        values["first_started_at"] = task.first_started_at or task.locked_at
        values["worker_ids"] = [*task.worker_ids, worker_id or ""]
    if fields:
        unknown = fields.keys() - _record_names()
        if unknown:  # as a keyword build would refuse them
            raise TypeError(f"CompletedTask has no field {', '.join(sorted(unknown))}")
        values.update(fields)
    values.update(
        task_id=task.pk,
        status=status,
        worker=worker_id or "",
        started_at=task.locked_at,
        scheduled_at=task.scheduled_at,
        finished_at=now,
    )
    # Built from positional values in the model's field order, as Django builds a row it read
    # (``Model.from_db``): the same instance, the same init signals, without matching each
    # keyword to a field. A field given no value gets its default, as a keyword build does.
    ordered = [
        values[name] if name in values else field.get_default() for name, field in _record_fields()
    ]
    return CompletedTask(*ordered)  # type: ignore[misc]


def reset_attempts(row: Task) -> None:
    """Clear what the attempts of an earlier task left on a new row copied from it."""
    row.attempts = 0
    row.handbacks = 0
    row.last_error = ""
    row.error_class = ""
    row.first_started_at = None
    row.worker_ids = []


def _storable(task: Task, text: str, what: str) -> str:
    """Return ``text`` as the column can hold it; the original goes to the log if it changed.

    Text is written by the worker after the task ran: a write that can never succeed would be
    retried for ever, or leave the row held, and the outcome would never be recorded. A huge
    one (an exception quoting a 10 MB value) is cut in the middle, where a traceback says
    least, with a note.
    """
    if len(text) > MAX_ERROR_LENGTH:
        half = MAX_ERROR_LENGTH // 2
        cut = len(text) - 2 * half
        text = f"{text[:half]}\n[... {cut} characters cut ...]\n{text[-half:]}"
    return storable_for(_using(), text, what=what, task_id=task.pk)


def _copied(task: Task, fields: list[str]) -> dict[str, Any]:
    """Return ``fields`` of a task, for its record or its next occurrence."""
    values = {name: getattr(task, name) for name in fields}
    if values["params"] is None:
        # JSON null, from a row made by hand, means "no arguments" (see decode_params); the
        # column is NOT NULL, so it is written as what it means.
        values["params"] = empty_params()
    return values


#: The longest error kept in ``last_error``; longer ones keep their start and their end.
MAX_ERROR_LENGTH = 20_000


def _plan_next_occurrence(task: Task, now: datetime) -> tuple[Task | None, str]:
    """Build (not save) the next run of a repeating task; return it, or None and why not.

    Computed from the series' grid, so it never drifts. Computed before the outcome is written:
    a repeat the row holds that cannot be computed (a malformed spec, a date out of range)
    ends the series with the reason noted, and never keeps the outcome from being recorded.
    """
    if not task.repeat:
        return None, ""
    try:
        anchor = task.repeat_anchor or task.scheduled_at or task.run_at
        due = task.scheduled_at or task.run_at
        zone = timezone.get_current_timezone()
        next_at = timing.next_repeat(aware(anchor), task.repeat, aware(max(due, now)), zone)
        # Without USE_TZ an occurrence in an hour repeated by a fall-back would read back an
        # hour early, be ready at once, and be computed again as its own successor: the
        # series goes on from the end of that second pass (see first_storable).
        storable = first_storable(next_at)
        if storable != next_at:
            next_at = timing.next_repeat(
                aware(anchor), task.repeat, storable - timedelta(microseconds=1), zone
            )
        next_at = to_db(next_at)
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
        return None, f"its repeat could not be computed: {isolation.describe(exc)}"
    if task.repeat_until is not None and next_at > task.repeat_until:
        return None, ""
    follower = Task(
        **_copied(task, CARRIED_FIELDS),
        scheduled_at=next_at,
        repeat_anchor=anchor,
        unique_key=task.unique_key,
    )
    follower.run_at = next_at
    reset_attempts(follower)
    follower.created_at = now
    return follower, ""


def _insert_follower(follower: Task) -> str:
    """Insert the next occurrence in a savepoint; return why it failed, or ""."""
    using = _using()
    try:
        with transaction.atomic(using=using):
            follower.save(using=using, force_insert=True)
    except Exception as exc:
        if isolation.is_database_fault(exc):
            raise
        return f"the database refused it: {isolation.describe(exc)}"
    return ""


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

    A repeating task's next occurrence is inserted in the same transaction; if it cannot be,
    the outcome is recorded all the same, with a note saying why the series stopped.

    With ``keep=False`` the row is only deleted: the record returned is not saved (no pk).
    """
    now = now or timezone.now()
    follower, no_follower = _plan_next_occurrence(task, now) if schedule_next else (None, "")
    using = _using()
    if archive_sql.orm_needed(using):
        return _archive_with_orm(task, status, worker_id, now, follower, no_follower, keep, fields)
    connection = connections[using]
    # Inside a shared transaction no savepoint: a failure rolls the caller's transaction back.
    with transaction.atomic(using=using, savepoint=_shared.pending is None):
        if follower is None and not no_follower:
            # The common case: one fenced move (one statement on PostgreSQL).
            completed = _record(task, status, worker_id, now, **fields)
            if not archive_sql.move_held(
                connection, task.pk, worker_id, task.locked_at, completed if keep else None
            ):
                _log_dropped(task, worker_id)
                return None
            return completed
        # The fenced delete comes first: it is the write that proves we still own the row.
        if not archive_sql.move_held(connection, task.pk, worker_id, task.locked_at, None):
            _log_dropped(task, worker_id)
            return None
        completed = _finish_record(task, status, worker_id, now, follower, no_follower, fields)
        if keep:
            archive_sql.insert(connection, completed)
    return completed


def _archive_with_orm(
    task: Task,
    status: str,
    worker_id: str | None,
    now: datetime,
    follower: Task | None,
    no_follower: str,
    keep: bool,
    fields: dict[str, Any],
) -> CompletedTask | None:
    """Archive through the ORM, so that the project's model signals are sent."""
    with transaction.atomic(using=_using(), savepoint=_shared.pending is None):
        deleted, _ = _held(task, worker_id).delete()
        if not deleted:
            _log_dropped(task, worker_id)
            return None
        completed = _finish_record(task, status, worker_id, now, follower, no_follower, fields)
        if keep:
            completed.save(using=_using(), force_insert=True)
    return completed


def _finish_record(
    task: Task,
    status: str,
    worker_id: str | None,
    now: datetime,
    follower: Task | None,
    no_follower: str,
    fields: dict[str, Any],
) -> CompletedTask:
    """Insert the next occurrence, if any, and return the (unsaved) record saying how it went."""
    if follower is not None:
        no_follower = _insert_follower(follower)
    if no_follower:
        logger.error(
            "event=repeat_stopped task=%s task_id=%s reason=%s",
            shown(task.task_name),
            task.pk,
            shown(no_follower),
        )
        note = _storable(task, f"No next occurrence was scheduled: {no_follower}", "last_error")
        earlier = fields.get("last_error", task.last_error)
        fields["last_error"] = f"{earlier}\n\n{note}" if earlier else note
    return _record(task, status, worker_id, now, **fields)


def record_success(
    task: Task, worker_id: str, result: Any, *, note: str = "", now: datetime | None = None
) -> CompletedTask | None:
    """Record a returned attempt: the task moves to CompletedTask as succeeded.

    ``note`` says what was not kept (a result that could not be stored). Should the database
    still refuse the result, the success is recorded without it: a task body that ran is never
    run again because its return value could not be written. With ``RECORD_SUCCEEDED = False``
    the row is deleted and no record is kept; the signal then carries an unsaved record.
    """
    note = _storable(task, note, "note") if note else ""
    keep = bool(app_settings.RECORD_SUCCEEDED)
    try:
        completed = archive(
            task,
            CompletedTask.Status.SUCCEEDED,
            worker_id,
            now=now,
            keep=keep,
            result=result,
            note=note,
        )
    except (DataError, IntegrityError) as exc:
        if result is None:
            raise
        logger.warning(
            "event=result_not_stored task=%s task_id=%s reason=%r",
            task.task_name,
            task.pk,
            f"the database refused it: {exc}",
        )
        note = _storable(
            task, f"The result was not stored: the database refused it ({exc}).", "note"
        )
        completed = archive(
            task,
            CompletedTask.Status.SUCCEEDED,
            worker_id,
            now=now,
            keep=keep,
            result=None,
            note=note,
        )
        result = None
    if completed is not None:
        _emit(
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
    schedule_next: bool | None = None,
) -> Outcome | None:
    """Record a failed attempt: retry later with backoff, or give up. Return what happened.

    The answer is ``Outcome.RETRY``, ``Outcome.GAVE_UP`` (``CANCELLED`` when a cancel was
    requested), or None when this worker no longer held the row. A
    repeating task that gives up goes on with its next occurrence if REPEAT_AFTER_FAILURE is
    set, unless ``schedule_next`` says otherwise.
    """
    now = now or timezone.now()
    error = _storable(task, error, "last_error")
    error_class = exception_path(exception)
    gives_up = permanent or task.attempts >= max_attempts_of(task)
    if gives_up:
        completed = archive(
            task,
            CompletedTask.Status.FAILED,
            worker_id,
            now=now,
            last_error=error,
            error_class=error_class,
            schedule_next=(
                bool(app_settings.REPEAT_AFTER_FAILURE) if schedule_next is None else schedule_next
            ),
        )
        if completed is None:
            return None
        _emit_failed(task, exception, error, will_retry=False)
        _emit(
            signals.task_gave_up,
            sender=task.task_name,
            task=task,
            completed=completed,
            exception=exception,
        )
        return Outcome.GAVE_UP
    if _cancel_requested(task):
        # An operator asked to stop it: a failure is no reason to try again.
        return (
            Outcome.CANCELLED
            if record_cancelled(task, worker_id, f"Cancelled while running.\n\n{error}")
            else None
        )
    delay = _retry_delay_of(task)
    # What Django's TaskResult reports of a task waiting for its retry: when its attempts
    # started, which workers ran them, and what the last one raised.
    attempt_fields = {
        "last_error": error,
        "error_class": error_class,
        "run_at": now + delay,
        "last_attempted_at": task.locked_at,
        "first_started_at": task.first_started_at or task.locked_at,
        "worker_ids": [*task.worker_ids, worker_id or ""],
    }
    updated = _held(task, worker_id).update(locked_by=None, locked_at=None, **attempt_fields)
    if not updated:
        _log_dropped(task, worker_id)
        return None

    def written() -> None:
        # Not before the commit: should a shared transaction roll back, the outcome is written
        # again alone, from the task as it was claimed.
        task.locked_by, task.locked_at = None, None
        for name, value in attempt_fields.items():
            setattr(task, name, value)

    _later(written)
    _emit_failed(task, exception, error, will_retry=True)
    return Outcome.RETRY


def exception_path(exception: BaseException | None) -> str:
    """Return the dotted path of an exception's class ("builtins.ValueError"), or ""."""
    return "" if exception is None else class_path(type(exception))


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _emit_failed(
    task: Task, exception: BaseException | None, error: str, *, will_retry: bool
) -> None:
    _emit(
        signals.task_failed,
        sender=task.task_name,
        task=task,
        exception=exception,
        traceback=error,
        will_retry=will_retry,
    )


def _log_dropped(task: Task, worker_id: str | None) -> None:
    """Note an outcome not written because the row was rescued and handed on meanwhile."""
    logger.warning(
        "event=outcome_dropped task_id=%s worker=%s reason=not_held", task.pk, shown(worker_id)
    )


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
        last_error=_storable(task, error, "last_error"),
        error_class=class_path(TaskCancelled),
        schedule_next=False,
    )
    if completed is not None:
        _emit(signals.task_cancelled, sender=task.task_name, task=task, completed=completed)
    return completed


def release(tasks: list[Task], worker_id: str) -> int:
    """Hand tasks that never started back to the queue without counting the attempt."""
    if not tasks:
        return 0
    return _claimed_as_read(tasks, worker_id).update(
        locked_by=None, locked_at=None, attempts=F("attempts") - 1
    )


def _claimed_as_read(tasks: list[Task], worker_id: str) -> QuerySet[Task]:
    """The rows of ``tasks`` that ``worker_id`` still holds from the claims they were read at."""
    by_claim: dict[datetime | None, list[int]] = {}
    for task in tasks:  # one claim stamps all its rows alike: one condition per claim
        by_claim.setdefault(task.locked_at, []).append(task.pk)
    claims = Q()
    for locked_at, ids in by_claim.items():
        claims |= Q(pk__in=ids, locked_at=locked_at)
    return Task.objects.using(_using()).filter(claims, locked_by=worker_id)


HANDED_BACK_TOO_OFTEN = (
    "Still running when its worker stopped, so handed back (hand-back {count}; only the first "
    "{limit} are free, BACKGROUND_TASKS_MAX_HANDBACKS): this attempt counts as failed."
)


def hand_back(tasks: list[Task], worker_id: str) -> int:
    """Hand back tasks still running at a clean shutdown; return how many went back uncounted.

    The first ``MAX_HANDBACKS`` hand-backs of a task are free: its attempt is not counted. After
    that each one is recorded as a failed attempt, so a task that never finishes (and outlives
    every shutdown grace) eventually gives up instead of coming back for ever.
    """
    limit = app_settings.MAX_HANDBACKS
    free = [t for t in tasks if t.handbacks < limit]
    handed_back = 0
    if free:
        handed_back = _claimed_as_read(free, worker_id).update(
            locked_by=None,
            locked_at=None,
            attempts=F("attempts") - 1,
            handbacks=F("handbacks") + 1,
        )
    for task in tasks:
        if task.handbacks < limit:
            continue
        task.handbacks += 1
        error = HANDED_BACK_TOO_OFTEN.format(count=task.handbacks, limit=limit)
        # Two statements, so that the failure's signals go out after its commit; should the
        # process die between them, the rescue records the failure instead.
        _held(task, worker_id).update(handbacks=task.handbacks)
        record_failure(task, worker_id, error, TaskInterrupted(error))
    return handed_back


def _cancel_requested(task: Task) -> bool:
    if task.cancel_requested_at is not None:
        return True
    return (
        Task.objects.using(_using()).filter(pk=task.pk, cancel_requested_at__isnull=False).exists()
    )


def _retry_delay_of(task: Task) -> timedelta:
    """Return the task's retry delay, falling back to the default backoff if its own fails.

    A task's backoff function is user code: if it raises or returns junk, the attempt must
    still be recorded, or the row would stay held by a live worker and never run again.
    """
    try:
        return retry_delay(options_of(task).backoff, task.attempts)
    except Exception as exc:
        logger.error(
            "event=backoff_failed task=%s task_id=%s error=%s",
            shown(task.task_name),
            task.pk,
            shown(repr(exc)),
        )
        return retry_delay(None, task.attempts)


__all__ = [
    "archive",
    "hand_back",
    "max_attempts_of",
    "record_cancelled",
    "record_failure",
    "record_success",
    "release",
    "shared_transaction",
]
