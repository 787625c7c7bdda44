"""A backend for Django's own tasks framework: ``django.tasks`` (Django 6.0 and later), or the
``django-tasks`` backport (import name ``django_tasks``) on Django 5.2.

With ``TASKS = {"default": {"BACKEND": "background_tasks.backends.DatabaseBackend"}}``, calling
``.enqueue()`` on a ``@django.tasks.task`` function inserts a row in background_tasks' Task
table. ``process_tasks`` runs that row as it runs any other, with the same claims, retries,
rescues and admin; ``get_result()`` reads the row back as a ``TaskResult``.

A row names its task by the Task's ``module_path``. The worker finds the function like this,
and never imports a path read from the database without checking what it gets:

- This backend registers a Task in background_tasks' registry whenever it validates one, and
  Django validates every Task when it is created. Workers import each installed app's ``tasks``
  module at start, so the Tasks defined there are known before any row is read.
- A name the registry does not know goes to ``resolve_django_task()``, the one place a name is
  imported: only when this backend is configured in ``TASKS``, only a module inside an installed
  app, and only if the attribute it names is a ``django.tasks.Task`` defined under exactly that
  path whose backend is this one. Otherwise the row fails as an unregistered task.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import router
from django.utils import timezone

from . import signals
from .columns import TASK_NAME_LENGTH, queue_problem, text_problem
from .conf import app_settings
from .enqueue import insert_task
from .exceptions import (
    BackgroundTasksError,
    InvalidTaskArguments,
    PermanentFailure,
    TaskCancelled,
)
from .registry import TaskFunction, registry
from .serialization import (
    check_signature,
    decode_params,
    encode_params,
    json_problem,
    params_hash,
)
from .states import TaskState

try:
    from django.tasks import Task as DjangoTask
    from django.tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.backends.immediate import ImmediateBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:  # Django < 6.0: the django-tasks backport, if installed
    try:
        from django_tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.backends.immediate import ImmediateBackend
        from django_tasks.base import Task as DjangoTask
        from django_tasks.base import TaskError
        from django_tasks.exceptions import InvalidTaskBackendError as InvalidTaskBackend
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
    except ImportError as exc:
        import django

        raise ImproperlyConfigured(
            "background_tasks.backends needs django.tasks (Django 6.0 or later) or the "
            f"django-tasks backport; this is Django {django.get_version()} without it. "
            "pip install 'background-tasks[django-tasks]', or use @background tasks."
        ) from exc

if TYPE_CHECKING:
    from .models import CompletedTask
    from .models import Task as QueuedTask

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("background_tasks")

#: Attribute of a registered runner pointing at the Django Task it runs.
DJANGO_TASK_ATTR = "django_task"
#: The keys a backend's ``OPTIONS`` may hold.
OPTION_NAMES = frozenset({"MAX_ATTEMPTS"})

_DOTTED_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


class DatabaseBackend(BaseTaskBackend):
    """Store Django Tasks as background_tasks rows, run by ``process_tasks``.

    Django's semantics by default: one attempt, and a task that raises is FAILED. ``OPTIONS``
    may hold ``MAX_ATTEMPTS`` (an integer >= 1) to opt into background_tasks' retries with
    backoff.
    """

    supports_defer = True
    # Coroutine functions run through async_to_sync in the worker thread.
    supports_async_task = True
    supports_get_result = True
    # Higher runs first, as Django means it, with the default PRIORITY_ORDERING "DESC".
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        from .checks import require_installed

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
        _register(task)

    def enqueue(
        self, task: DjangoTask[P, R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        """Insert a row for the call in the caller's transaction and return its result."""
        from .models import Task as QueuedTask

        self.validate_task(task)
        name = task.module_path
        shape = _call_shape(task)
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
        result = _result_of_queued(row, task, self.alias)
        task_enqueued.send(sender=type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        """Return the result of the row with this id, waiting, running or finished."""
        from .models import CompletedTask
        from .models import Task as QueuedTask

        pk = _row_id(result_id)
        if pk is None:
            raise TaskResultDoesNotExist(result_id)
        using = router.db_for_write(QueuedTask)
        # Queue first, history second: a task archived between the two reads is in the
        # history by the second, since both writes commit together.
        queued = QueuedTask.objects.using(using).filter(pk=pk).first()
        if queued is not None:
            task = _django_task_named(queued.task_name)
            if task is not None:
                return _result_of_queued(queued, _as_run(task, queued, self.alias), self.alias)
            raise TaskResultDoesNotExist(result_id)
        completed = CompletedTask.objects.using(using).filter(task_id=pk).first()
        if completed is not None:
            task = _django_task_named(completed.task_name)
            if task is not None:
                return _result_of_completed(
                    completed, _as_run(task, completed, self.alias), self.alias
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


class _CallShape:
    """Something ``inspect.signature()`` reads as the call a Task takes (without its context)."""

    def __init__(self, signature: inspect.Signature) -> None:
        self.__signature__ = signature

    def __call__(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - never called
        raise NotImplementedError


def _call_shape(task: DjangoTask[..., Any]) -> Callable[..., Any]:
    if not task.takes_context:
        return task.func
    signature = inspect.signature(task.func)
    return _CallShape(signature.replace(parameters=list(signature.parameters.values())[1:]))


# -- registration ------------------------------------------------------------------------------


def _register(task: DjangoTask[..., Any]) -> None:
    """Register ``task`` under its module path, unless it is already registered."""
    known = _registered_django_task(task.module_path)
    if known is not None and known.func is task.func:
        return
    registry.register(
        TaskFunction(
            func=_runner(task),
            name=task.module_path,
            queue=task.queue_name,
            priority=task.priority,
        )
    )


def _runner(task: DjangoTask[..., Any]) -> Callable[..., Any]:
    """Return the function a worker calls to run a row of ``task``."""
    name = task.module_path
    shape = _call_shape(task)

    # Takes anything, so that parameters named like the options of a @background call
    # (queue, priority, ...) are no reason to refuse a Django Task.
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            check_signature(name, shape, args, kwargs)
        except InvalidTaskArguments as exc:
            # The stored call no longer fits the code: trying again cannot help.
            raise PermanentFailure(str(exc)) from None
        if task.takes_context:
            value = task.call(TaskContext(task_result=_running_result(task)), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        problem = json_problem(value)
        if problem:
            # As Django's ImmediateBackend: the attempt fails with a TypeError.
            raise TypeError(f"Unsupported type for a task's return value: {problem}")
        return value

    run.__module__ = task.func.__module__
    run.__name__ = task.func.__name__
    run.__qualname__ = task.func.__qualname__
    run.__doc__ = task.func.__doc__
    setattr(run, DJANGO_TASK_ATTR, task)
    return run


def _running_result(task: DjangoTask[..., Any]) -> TaskResult[..., Any]:
    from .execution import current_task

    row = current_task()
    if row is None:
        raise RuntimeError(
            f"Task {task.module_path!r} takes a context, which exists only while a worker runs it."
        )
    backend = _backend_of(task)
    alias = backend.alias if backend is not None else task.backend
    return _result_of_queued(row, _as_run(task, row, alias), alias)


def _registered_django_task(name: str) -> DjangoTask[..., Any] | None:
    if name not in registry:
        return None
    found = getattr(registry.get(name).func, DJANGO_TASK_ATTR, None)
    return found if isinstance(found, DjangoTask) else None


def _django_task_named(name: str) -> DjangoTask[..., Any] | None:
    """Return the Django Task registered (or resolvable) as ``name``, or None."""
    if name in registry:
        return _registered_django_task(name)
    if resolve_django_task(name) is None:
        return None
    return _registered_django_task(name)


def resolve_django_task(name: str) -> TaskFunction[Any, Any] | None:
    """Find, register and return the Django Task a row names, or return None.

    This is the one place background_tasks imports a name read from the database, and it is
    guarded: ``name`` must be a dotted path whose module lies inside an installed app, a backend
    of this class must be configured in ``TASKS``, and the attribute must be a
    ``django.tasks.Task`` whose ``module_path`` is ``name`` and whose backend is of this class.
    Anything else, including a module that fails to import, gives None.
    """
    if name in registry:
        function = registry.get(name)
        return function if _registered_django_task(name) is not None else None
    if not _DOTTED_PATH.fullmatch(name) or next(_configured_backends(), None) is None:
        return None
    module_name, _, attribute = name.rpartition(".")
    if not _inside_installed_app(module_name):
        return None
    try:
        module = importlib.import_module(module_name)
    except Exception:
        logger.warning("event=django_task_import_failed task=%s", name, exc_info=True)
        return None
    candidate = getattr(module, attribute, None)
    if not isinstance(candidate, DjangoTask) or candidate.module_path != name:
        return None
    if _backend_of(candidate, fallback=False) is None:
        return None
    _register(candidate)
    return registry.get(name)


def _inside_installed_app(module_name: str) -> bool:
    return any(
        module_name == config.name or module_name.startswith(config.name + ".")
        for config in apps.get_app_configs()
    )


def _configured_backends() -> Iterator[DatabaseBackend]:
    for alias in task_backends:
        try:
            backend = task_backends[alias]
        except ImproperlyConfigured:
            continue
        if isinstance(backend, DatabaseBackend):
            yield backend


def _backend_of(task: DjangoTask[..., Any], *, fallback: bool = True) -> DatabaseBackend | None:
    """Return the task's own backend if it is one of ours, else (``fallback``) any of ours."""
    try:
        backend = task.get_backend()
    except ImproperlyConfigured:
        backend = None
    if isinstance(backend, DatabaseBackend):
        return backend
    return next(_configured_backends(), None) if fallback else None


# -- results -----------------------------------------------------------------------------------


def _row_id(result_id: object) -> int | None:
    if not isinstance(result_id, str) or not (result_id.isascii() and result_id.isdigit()):
        return None
    pk = int(result_id)
    return pk if str(pk) == result_id and 0 < pk < 2**63 else None


def _as_run(
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


def _result_of_queued(row: QueuedTask, task: DjangoTask[P, R], alias: str) -> TaskResult[P, R]:
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


def _result_of_completed(
    completed: CompletedTask, task: DjangoTask[P, R], alias: str
) -> TaskResult[P, R]:
    from .models import CompletedTask

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


# -- Django's task signals, sent from background_tasks' own -------------------------------------
#
# Sent for rows of Django Tasks only: task_started at every attempt, task_finished once, when
# the task ends as SUCCESSFUL or FAILED (an attempt that will be retried leaves it READY).
# A failing receiver is logged and never stops the worker from recording the outcome.


def _send(signal_name: str, row: QueuedTask, completed: CompletedTask | None) -> None:
    task = _django_task_named(row.task_name)
    if task is None:
        return
    try:
        backend = _backend_of(task)
        sender = type(backend) if backend is not None else DatabaseBackend
        alias = backend.alias if backend is not None else task.backend
        if completed is None:
            result = _result_of_queued(row, _as_run(task, row, alias), alias)
            task_started.send(sender=sender, task_result=result)
        else:
            result = _result_of_completed(completed, _as_run(task, completed, alias), alias)
            task_finished.send(sender=sender, task_result=result)
    except Exception:
        logger.exception(
            "event=django_signal_failed signal=%s task=%s task_id=%s",
            signal_name,
            row.task_name,
            row.pk,
        )


def _on_started(sender: str, task: QueuedTask, **kwargs: Any) -> None:
    _send("task_started", task, None)


def _on_finished(sender: str, task: QueuedTask, completed: CompletedTask, **kwargs: Any) -> None:
    _send("task_finished", task, completed)


signals.task_started.connect(_on_started, dispatch_uid="background_tasks.backends")
for _signal in (signals.task_succeeded, signals.task_gave_up, signals.task_cancelled):
    _signal.connect(_on_finished, dispatch_uid="background_tasks.backends")


__all__ = ["DatabaseBackend", "resolve_django_task"]
