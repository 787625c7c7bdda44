"""Copy the queue (and, if asked, the history) of django-background-tasks into our tables.

Its tables are read through two unmanaged models kept in a registry of their own, so they are
invisible to this project's migrations and its app registry, and need its package neither
installed nor importable. Each copied row is remembered in ``LegacyImport``, in the same
transaction as the copy, so a second run copies nothing twice. A row that cannot be copied (a
task name no longer registered, arguments that are not valid JSON or no longer fit the function)
is reported with its id and left where it is: fix the cause and run the import again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.apps.registry import Apps
from django.db import IntegrityError, connections, models, router, transaction
from django.utils import timezone

from .conf import app_settings
from .enqueue import check_row, insert_task
from .exceptions import InvalidTaskArguments, InvalidTaskError
from .models import CompletedTask, LegacyImport, Task
from .options import options_of
from .registry import registry
from .serialization import check_signature, encode_params, params_hash
from .timing import encode_repeat

TASK_TABLE = "background_task"
COMPLETED_TABLE = "background_task_completedtask"
BATCH_SIZE = 500

_legacy_apps = Apps()


class _LegacyFields(models.Model):
    """The columns both of django-background-tasks' tables have (its migrations 0001, 0002)."""

    task_name = models.CharField(max_length=190)
    task_params = models.TextField()
    verbose_name = models.CharField(max_length=255, null=True)
    priority = models.IntegerField()
    run_at = models.DateTimeField()
    repeat = models.BigIntegerField()
    repeat_until = models.DateTimeField(null=True)
    queue = models.CharField(max_length=190, null=True)
    attempts = models.IntegerField()
    failed_at = models.DateTimeField(null=True)
    last_error = models.TextField()
    locked_by = models.CharField(max_length=64, null=True)
    locked_at = models.DateTimeField(null=True)
    creator_object_id = models.PositiveIntegerField(null=True)
    creator_content_type_id = models.IntegerField(null=True)

    class Meta:
        abstract = True
        apps = _legacy_apps
        app_label = "background_task"
        managed = False

    def __str__(self) -> str:
        return f"{self._meta.db_table} {self.pk} ({self.task_name})"


class LegacyTask(_LegacyFields):
    class Meta(_LegacyFields.Meta):
        db_table = TASK_TABLE


class LegacyCompletedTask(_LegacyFields):
    class Meta(_LegacyFields.Meta):
        db_table = COMPLETED_TABLE


@dataclass(frozen=True)
class Problem:
    """A row left uncopied, and why."""

    table: str
    source_id: int
    task_name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.table} {self.source_id} ({self.task_name}): {self.reason}"


@dataclass
class ImportReport:
    """What an import copied (or, in a dry run, would copy) and what it left behind."""

    tables: list[str] = field(default_factory=list)
    tasks: int = 0
    history: int = 0
    already_imported: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: Of ``problems``, those copied as failed records (``record_problems=True``).
    problems_recorded: int = 0
    #: Source ids of rows a django-background-tasks worker held: copied as waiting tasks.
    were_locked: list[int] = field(default_factory=list)
    #: Source ids of tasks of ``unique=True`` functions whose call was already queued here:
    #: not copied again (the old row counts as imported, as that task).
    already_queued: list[int] = field(default_factory=list)
    #: Source ids of tasks that gave up but stayed in ``background_task`` (older versions kept
    #: them there): copied as failed history with ``history=True``, else left.
    failed_left: list[int] = field(default_factory=list)


class _Skip(Exception):
    """A row that cannot be copied; the message says why."""


def existing_tables(using: str) -> list[str]:
    present = set(connections[using].introspection.table_names())
    return [table for table in (TASK_TABLE, COMPLETED_TABLE) if table in present]


def _rows(model: type[_LegacyFields], using: str, batch_size: int) -> Iterator[list[Any]]:
    last = 0
    while True:
        batch = list(
            model._default_manager.using(using).filter(pk__gt=last).order_by("pk")[:batch_size]
        )
        if not batch:
            return
        yield batch
        last = batch[-1].pk


def _call(row: _LegacyFields) -> tuple[list[Any], dict[str, Any]]:
    """Return (args, kwargs) of a row; its task_params is the JSON text ``[[args], {kwargs}]``."""
    try:
        decoded = json.loads(row.task_params)
    except (TypeError, ValueError) as exc:
        raise _Skip(f"arguments are not valid JSON ({exc}): {row.task_params[:100]!r}") from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 2
        or not isinstance(decoded[0], list)
        or not isinstance(decoded[1], dict)
    ):
        raise _Skip(f"arguments are not [[args], {{kwargs}}]: {row.task_params[:100]!r}")
    return decoded[0], decoded[1]


def _common(row: _LegacyFields) -> dict[str, Any]:
    try:
        repeat = encode_repeat(row.repeat or None)
    except (TypeError, ValueError) as exc:
        raise _Skip(f"repeat {row.repeat!r} is not a number of seconds: {exc}") from None
    return {
        "task_name": row.task_name,
        "verbose_name": row.verbose_name or "",
        "priority": row.priority,
        "run_at": row.run_at,
        "attempts": max(0, row.attempts),
        "last_error": (row.last_error or "").replace("\x00", "\\x00"),
        "repeat": repeat,
        "repeat_until": row.repeat_until,
        "creator_content_type_id": row.creator_content_type_id,
        "creator_object_id": None if row.creator_object_id is None else str(row.creator_object_id),
    }


def _pending_task(row: _LegacyFields, now: datetime) -> Task:
    if row.task_name not in registry:
        raise _Skip(f"no task is registered as {row.task_name!r}")
    function = registry.get(row.task_name)
    args, kwargs = _call(row)
    try:
        check_signature(row.task_name, function.func, args, kwargs)
        params = encode_params(row.task_name, function.func, args, kwargs)
    except InvalidTaskArguments as exc:
        raise _Skip(str(exc)) from None
    queue = row.queue or options_of(function).queue
    task = Task(params=params, queue=queue, created_at=now, **_common(row))
    if function.unique:
        # As enqueue() does: one pending copy of a unique call, whoever queued it.
        task.unique_key = params_hash(row.task_name, params)
    try:
        check_row(task)
    except InvalidTaskError as exc:
        raise _Skip(str(exc)) from None
    return task


def _record(row: _LegacyFields, status: str) -> CompletedTask:
    # History keeps what ran then, registered or not; only the JSON must be readable.
    args, kwargs = _call(row)
    finished_at = row.failed_at or row.run_at
    return CompletedTask(
        params={"args": args, "kwargs": kwargs},
        queue=row.queue or app_settings.DEFAULT_QUEUE,
        # The old history does not keep the id the task had while it was queued.
        task_id=0,
        status=status,
        worker=row.locked_by or "",
        started_at=row.locked_at,
        finished_at=finished_at,
        created_at=finished_at,
        **_common(row),
    )


def _copy(
    row: _LegacyFields, table: str, obj: Task | CompletedTask, using: str, dry_run: bool
) -> str:
    """Insert ``obj`` and remember where it came from.

    Return "copied"; "already" if another run copied the row first; or "unique" if ``obj`` is
    a task of a ``unique=True`` function whose call is already queued (the row is then
    remembered as that task, and no second copy is made).
    """
    if dry_run:
        pending = (
            isinstance(obj, Task)
            and bool(obj.unique_key)
            and (Task.objects.using(using).filter(unique_key=obj.unique_key).exists())
        )
        return "unique" if pending else "copied"
    standing: Task | CompletedTask
    try:
        with transaction.atomic(using=using):
            if isinstance(obj, Task):
                # Like any new task: a unique one whose call is pending becomes that task.
                standing = insert_task(obj, using=using, robust_signal=True)
            else:
                obj.save(using=using, force_insert=True)
                standing = obj
            LegacyImport.objects.using(using).create(
                source_table=table,
                source_id=row.pk,
                target_model="task" if isinstance(obj, Task) else "completedtask",
                target_id=standing.pk,
            )
    except IntegrityError:
        if LegacyImport.objects.using(using).filter(source_table=table, source_id=row.pk).exists():
            return "already"
        raise
    return "copied" if standing is obj else "unique"


@dataclass(frozen=True)
class _Options:
    history: bool
    dry_run: bool
    record_problems: bool
    now: datetime
    using: str


def import_legacy(
    *,
    history: bool = False,
    dry_run: bool = False,
    record_problems: bool = False,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Copy waiting tasks (and with ``history``, finished ones) not copied before.

    Each row is copied in its own short transaction with its ``LegacyImport`` mark, so an
    interrupted import resumes where it stopped. A row that cannot be queued is reported and
    left in place, or with ``record_problems`` copied as a failed record whose error gives the
    reason and the original ``task_params`` text. With ``dry_run`` nothing is written: the
    report says what would be copied and what could not be.
    """
    using = router.db_for_write(Task)
    options = _Options(history, dry_run, record_problems, now or timezone.now(), using)
    report = ImportReport(tables=existing_tables(using))
    sources: list[tuple[type[_LegacyFields], str]] = []
    if TASK_TABLE in report.tables:
        sources.append((LegacyTask, TASK_TABLE))
    if history and COMPLETED_TABLE in report.tables:
        sources.append((LegacyCompletedTask, COMPLETED_TABLE))
    for model, table in sources:
        for batch in _rows(model, using, batch_size):
            done = set(
                LegacyImport.objects.using(using)
                .filter(source_table=table, source_id__in=[row.pk for row in batch])
                .values_list("source_id", flat=True)
            )
            for row in batch:
                if row.pk in done:
                    report.already_imported += 1
                    continue
                _import_row(row, table, options, report)
    return report


def _import_row(row: _LegacyFields, table: str, options: _Options, report: ImportReport) -> None:
    obj: Task | CompletedTask
    try:
        if table == COMPLETED_TABLE:
            failed = row.failed_at is not None
            status = CompletedTask.Status.FAILED if failed else CompletedTask.Status.SUCCEEDED
            obj = _record(row, status)
        elif row.failed_at is not None:
            if not options.history:
                report.failed_left.append(row.pk)
                return
            obj = _record(row, CompletedTask.Status.FAILED)
        else:
            obj = _pending_task(row, options.now)
    except _Skip as exc:
        problem = Problem(table, row.pk, row.task_name, str(exc))
        report.problems.append(problem)
        if not options.record_problems:
            return
        obj = _problem_record(row, problem, options.now)
        report.problems_recorded += 1
    outcome = _copy(row, table, obj, options.using, options.dry_run)
    if outcome == "already":
        report.already_imported += 1
        return
    if outcome == "unique":
        report.already_queued.append(row.pk)
        return
    if isinstance(obj, Task):
        report.tasks += 1
        if row.locked_by:
            report.were_locked.append(row.pk)
    else:
        report.history += 1


def _problem_record(row: _LegacyFields, problem: Problem, now: datetime) -> CompletedTask:
    """A failed record keeping what a row that cannot be queued held, and why."""
    error = (
        f"Not imported from {problem.table} {problem.source_id}: {problem.reason}.\n\n"
        f"Its task_params: {row.task_params}"
    )
    return CompletedTask(
        task_name=row.task_name,
        verbose_name=row.verbose_name or "",
        queue=row.queue or app_settings.DEFAULT_QUEUE,
        priority=row.priority,
        run_at=row.run_at,
        attempts=max(0, row.attempts),
        last_error=error.replace("\x00", "\\x00"),
        task_id=0,
        status=CompletedTask.Status.FAILED,
        finished_at=now,
        created_at=now,
    )


__all__ = ["COMPLETED_TABLE", "TASK_TABLE", "ImportReport", "Problem", "import_legacy"]
