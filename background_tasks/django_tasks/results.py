"""A background_tasks row read back as a Django ``TaskResult``: waiting, running or finished."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from django.core.exceptions import ImproperlyConfigured

from ..exceptions import BackgroundTasksError, InvalidTaskArguments, TaskCancelled
from ..serialization import decode_params
from ..states import TaskState
from .framework import DjangoTask, InvalidTask, TaskError, TaskResult, TaskResultStatus

if TYPE_CHECKING:
    from ..models import CompletedTask
    from ..models import Task as QueuedTask

P = ParamSpec("P")
R = TypeVar("R")


def row_id(result_id: object) -> int | None:
    """Return the row id a result id names, or None when it names none."""
    if not isinstance(result_id, str) or not (result_id.isascii() and result_id.isdigit()):
        return None
    pk = int(result_id)
    return pk if str(pk) == result_id and 0 < pk < 2**63 else None


def as_run(
    task: DjangoTask[..., Any], row: QueuedTask | CompletedTask, alias: str
) -> DjangoTask[..., Any]:
    """Return ``task`` as the row ran it: its queue, priority, start time and backend."""
    scheduled = row.scheduled_at or row.run_at
    try:
        return task.using(
            priority=row.priority,
            queue_name=row.queue,
            # enqueue() writes run_at = created_at exactly when no run_after was given.
            run_after=scheduled if scheduled != row.created_at else None,
            backend=alias,
        )
    except (InvalidTask, ImproperlyConfigured):
        # Say, a queue since removed from QUEUES: the task as defined still names the function.
        return task


def _params(row: QueuedTask | CompletedTask) -> tuple[list[Any], dict[str, Any]]:
    try:
        return decode_params(row.params)
    except InvalidTaskArguments:
        return [], {}


def _errors(row: QueuedTask | CompletedTask, cancelled: bool = False) -> list[TaskError]:
    text = row.last_error or ("Cancelled." if cancelled else "")
    if not text:
        return []
    # Errors background_tasks itself wrote before 0002 have no class: say it was one of ours.
    path = row.error_class or _path_of(TaskCancelled if cancelled else BackgroundTasksError)
    return [TaskError(exception_class_path=path, traceback=text)]


def _path_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def result_of_queued(row: QueuedTask, task: DjangoTask[P, R], alias: str) -> TaskResult[P, R]:
    """Return the result of a row still in the queue: READY, or RUNNING while a worker holds it."""
    args, kwargs = _params(row)
    # A quarantined row is held by no worker: it waits for an operator, so it reads as READY.
    running = row.state == TaskState.RUNNING
    worker_ids = list(row.worker_ids)
    if running:
        worker_ids.append(row.locked_by or "")
    return TaskResult(
        task=task,
        id=str(row.pk),
        status=TaskResultStatus.RUNNING if running else TaskResultStatus.READY,
        enqueued_at=row.created_at,
        started_at=row.first_started_at or (row.locked_at if running else None),
        last_attempted_at=row.locked_at if running else row.last_attempted_at,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend=alias,
        errors=_errors(row),
        worker_ids=worker_ids,
    )


def result_of_completed(
    completed: CompletedTask, task: DjangoTask[P, R], alias: str
) -> TaskResult[P, R]:
    """Return the result of a history record: SUCCESSFUL, or FAILED (given up or cancelled)."""
    from ..models import CompletedTask  # not at import: backends load before the app registry

    args, kwargs = _params(completed)
    succeeded = completed.status == CompletedTask.Status.SUCCEEDED
    cancelled = completed.status == CompletedTask.Status.CANCELLED
    result = TaskResult(
        task=task,
        id=str(completed.task_id),
        status=TaskResultStatus.SUCCESSFUL if succeeded else TaskResultStatus.FAILED,
        enqueued_at=completed.created_at,
        started_at=completed.first_started_at or completed.started_at,
        last_attempted_at=completed.started_at,
        finished_at=completed.finished_at,
        args=args,
        kwargs=kwargs,
        backend=alias,
        # A cancel always leaves an error, so that FAILED comes with a reason.
        errors=_errors(completed, cancelled),
        worker_ids=list(completed.worker_ids),
    )
    if succeeded:
        # Django keeps the return value in a field that is not part of the constructor.
        object.__setattr__(result, "_return_value", completed.result)
    return result
