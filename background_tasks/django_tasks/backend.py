"""``DatabaseBackend``: Django Tasks stored as background_tasks rows and read back as results.

With ``TASKS = {"default": {"BACKEND": "background_tasks.backends.DatabaseBackend"}}``, calling
``.enqueue()`` on a ``@django.tasks.task`` function inserts a row in background_tasks' Task
table. ``process_tasks`` runs that row as it runs any other, with the same claims, retries,
rescues and admin; ``get_result()`` reads the row back as a ``TaskResult``.
"""

from __future__ import annotations

from typing import Any, ParamSpec, TypeVar

from django.apps import apps
from django.core import checks
from django.db import router
from django.utils import timezone

from ..columns import TASK_NAME_LENGTH, queue_problem, text_problem
from ..conf import app_settings
from ..installed import require_installed
from ..serialization import check_signature, encode_params, params_hash
from .framework import (
    BaseTaskBackend,
    DjangoTask,
    ImmediateBackend,
    InvalidTask,
    InvalidTaskBackend,
    TaskResult,
    TaskResultDoesNotExist,
    task_enqueued,
)
from .resolve import call_shape, django_task_named, register
from .results import as_run, result_of_completed, result_of_queued, row_id

P = ParamSpec("P")
R = TypeVar("R")

#: The keys a backend's ``OPTIONS`` may hold.
OPTION_NAMES = frozenset({"MAX_ATTEMPTS"})


class DatabaseBackend(BaseTaskBackend):
    """Store Django Tasks as background_tasks rows, run by ``process_tasks``.

    Django's semantics by default: one attempt, and a task that raises is FAILED. ``OPTIONS``
    may hold ``MAX_ATTEMPTS`` (an integer >= 1) to opt into background_tasks' retries with
    backoff.
    """

    # Resolution and the signal bridge trust only backends with this mark.
    keeps_background_tasks_rows = True
    supports_defer = True
    # Coroutine functions run through async_to_sync in the worker thread.
    supports_async_task = True
    supports_get_result = True
    # Higher runs first, as Django means it, with the default PRIORITY_ORDERING "DESC".
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        require_installed(f"Task backend {alias!r} keeps its tasks in background_tasks' tables")
        super().__init__(alias, params)
        unknown = set(self.options) - OPTION_NAMES
        if unknown:
            raise InvalidTaskBackend(
                f"Task backend {alias!r}: unknown OPTIONS {sorted(unknown)}; "
                f"{type(self).__name__} knows {sorted(OPTION_NAMES)}."
            )
        max_attempts = self.options.get("MAX_ATTEMPTS")
        if max_attempts is not None and (
            isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
        ):
            raise InvalidTaskBackend(
                f"Task backend {alias!r}: OPTIONS['MAX_ATTEMPTS'] must be an integer >= 1, "
                f"not {max_attempts!r}."
            )
        self.max_attempts: int = 1 if max_attempts is None else max_attempts
        self._inline_backend: ImmediateBackend | None = None

    def validate_task(self, task: DjangoTask[..., Any]) -> None:
        """Check that the Task fits a row, then register it so that workers can run it."""
        super().validate_task(task)
        problem = text_problem(task.module_path, TASK_NAME_LENGTH)
        if problem:
            raise InvalidTask(f"Task path {task.module_path[:80]!r} is refused: {problem}.")
        problem = queue_problem(task.queue_name)
        if problem:
            raise InvalidTask(f"Queue name {problem}.")
        register(task)

    def enqueue(
        self, task: DjangoTask[P, R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        """Insert a row for the call in the caller's transaction and return its result."""
        # Here, not at the top: the backend is created from the TASKS setting before the app is
        # known to be installed, and the enqueue path loads the models.
        from ..enqueue import insert_task
        from ..models import Task as QueuedTask

        self.validate_task(task)
        name = task.module_path
        shape = call_shape(task)
        check_signature(name, shape, args, kwargs)
        params = encode_params(name, shape, args, kwargs)
        if app_settings.IMMEDIATE:
            return self._inline().enqueue(task, args, kwargs)

        now = timezone.now()
        run_at = task.run_after or now
        row = QueuedTask(
            task_name=name,
            params=params,
            task_hash=params_hash(name, params),
            queue=task.queue_name,
            priority=task.priority,
            run_at=run_at,
            scheduled_at=run_at,
            max_attempts=self.max_attempts,
            created_at=now,
        )
        insert_task(row, using=router.db_for_write(QueuedTask))
        result = result_of_queued(row, task, self.alias)
        task_enqueued.send(sender=type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        """Return the result of the row with this id, waiting, running or finished."""
        from ..models import CompletedTask
        from ..models import Task as QueuedTask

        pk = row_id(result_id)
        if pk is None:
            raise TaskResultDoesNotExist(result_id)
        using = router.db_for_write(QueuedTask)
        # Queue first, history second: a task archived between the two reads is in the
        # history by the second, since both writes commit together.
        queued = QueuedTask.objects.using(using).filter(pk=pk).first()
        if queued is not None:
            task = django_task_named(queued.task_name)
            if task is not None:
                return result_of_queued(queued, as_run(task, queued, self.alias), self.alias)
            raise TaskResultDoesNotExist(result_id)
        completed = CompletedTask.objects.using(using).filter(task_id=pk).first()
        if completed is not None:
            task = django_task_named(completed.task_name)
            if task is not None:
                return result_of_completed(
                    completed, as_run(task, completed, self.alias), self.alias
                )
        raise TaskResultDoesNotExist(result_id)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """Add ``background_tasks.E101`` and ``W101`` to Django's checks of the backend."""
        messages: list[checks.CheckMessage] = list(super().check(**kwargs))
        if not apps.is_installed("background_tasks"):
            messages.append(
                checks.Error(
                    f"Task backend {self.alias!r} keeps tasks in background_tasks' tables, "
                    "but that app is not installed.",
                    hint="Add 'background_tasks' to INSTALLED_APPS.",
                    id="background_tasks.E101",
                )
            )
        if not app_settings.priority_descending:
            messages.append(
                checks.Warning(
                    "Django tasks run higher priorities first, but "
                    "BACKGROUND_TASKS_PRIORITY_ORDERING runs lower numbers first, so priorities "
                    "given to Django tasks work backwards.",
                    hint="Use the default ordering 'DESC' when Django tasks set priorities.",
                    id="background_tasks.W101",
                )
            )
        return messages

    def _inline(self) -> ImmediateBackend:
        if self._inline_backend is None:
            self._inline_backend = _InlineBackend(
                self.alias, {"QUEUES": list(self.queues), "OPTIONS": {}}
            )
        return self._inline_backend


class _InlineBackend(ImmediateBackend):
    """Run a Task at once under BACKGROUND_TASKS_IMMEDIATE, ignoring run_after like @background."""

    supports_defer = True
