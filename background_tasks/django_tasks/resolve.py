"""From a row's task name to the Django Task that runs it: registration and guarded resolution.

A row names its task by the Task's ``module_path``. The worker finds the function like this,
and never imports a path read from the database without checking what it gets:

- The backend registers a Task in background_tasks' registry whenever it validates one, and
  Django validates every Task when it is created. Workers import each installed app's ``tasks``
  module at start, so the Tasks defined there are known before any row is read.
- A name the registry does not know goes to ``resolve_django_task()`` (the registry asks the
  resolvers the app registers from ``AppConfig.ready()``), the one place a name is imported:
  only when a backend of ours is configured in ``TASKS``, only a module inside an installed app,
  and only if the attribute it names is a ``django.tasks.Task`` defined under exactly that path
  whose backend is one of ours. Otherwise the row fails as an unregistered task.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured

from ..exceptions import InvalidTaskArguments, PermanentFailure
from ..registry import registry
from ..serialization import check_signature, json_problem
from ..task_function import TaskFunction
from .framework import BaseTaskBackend, DjangoTask, TaskContext, TaskResult, task_backends
from .results import as_run, result_of_queued

logger = logging.getLogger("background_tasks")

#: Attribute of a registered runner pointing at the Django Task it runs.
DJANGO_TASK_ATTR = "django_task"
#: Class attribute marking a backend that keeps its tasks as background_tasks rows. A marker,
#: not ``isinstance(backend, DatabaseBackend)``, so that resolution sits below the backend.
ROWS_BACKEND_ATTR = "keeps_background_tasks_rows"

_DOTTED_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


class _CallShape:
    """Something ``inspect.signature()`` reads as the call a Task takes (without its context)."""

    def __init__(self, signature: inspect.Signature) -> None:
        self.__signature__ = signature

    def __call__(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - never called
        raise NotImplementedError


def call_shape(task: DjangoTask[..., Any]) -> Callable[..., Any]:
    """Return a callable whose signature is the call ``task`` takes from its callers."""
    if not task.takes_context:
        return task.func
    signature = inspect.signature(task.func)
    return _CallShape(signature.replace(parameters=list(signature.parameters.values())[1:]))


def register(task: DjangoTask[..., Any]) -> None:
    """Register ``task`` under its module path, unless it is already registered."""
    known = registered_django_task(task.module_path)
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
    shape = call_shape(task)

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
    # Not at import: execution needs the models, and a backend may load before the app registry.
    from ..execution import current_task

    row = current_task()
    if row is None:
        raise RuntimeError(
            f"Task {task.module_path!r} takes a context, which exists only while a worker runs it."
        )
    backend = backend_of(task)
    alias = backend.alias if backend is not None else task.backend
    return result_of_queued(row, as_run(task, row, alias), alias)


def registered_django_task(name: str) -> DjangoTask[..., Any] | None:
    """Return the Django Task registered as ``name``, or None (unknown, or a @background task)."""
    if name not in registry:
        return None
    found = getattr(registry.get(name).func, DJANGO_TASK_ATTR, None)
    return found if isinstance(found, DjangoTask) else None


def django_task_named(name: str) -> DjangoTask[..., Any] | None:
    """Return the Django Task registered (or resolvable) as ``name``, or None."""
    if name in registry:
        return registered_django_task(name)
    if resolve_django_task(name) is None:
        return None
    return registered_django_task(name)


def resolve_django_task(name: str) -> TaskFunction[Any, Any] | None:
    """Find, register and return the Django Task a row names, or return None.

    This is the one place background_tasks imports a name read from the database, and it is
    guarded: ``name`` must be a dotted path whose module lies inside an installed app, a backend
    of ours must be configured in ``TASKS``, and the attribute must be a ``django.tasks.Task``
    whose ``module_path`` is ``name`` and whose backend is one of ours. Anything else, including
    a module that fails to import, gives None.
    """
    if name in registry:
        function = registry.get(name)
        return function if registered_django_task(name) is not None else None
    if not _DOTTED_PATH.fullmatch(name) or next(configured_backends(), None) is None:
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
    if backend_of(candidate, fallback=False) is None:
        return None
    register(candidate)
    return registry.get(name)


def _inside_installed_app(module_name: str) -> bool:
    return any(
        module_name == config.name or module_name.startswith(config.name + ".")
        for config in apps.get_app_configs()
    )


def _ours(backend: object) -> bool:
    return isinstance(backend, BaseTaskBackend) and getattr(backend, ROWS_BACKEND_ATTR, False)


def configured_backends() -> Iterator[BaseTaskBackend]:
    """Yield the backends of ``TASKS`` that keep their tasks as background_tasks rows."""
    for alias in task_backends:
        try:
            backend = task_backends[alias]
        except ImproperlyConfigured:
            continue
        if _ours(backend):
            yield backend


def backend_of(task: DjangoTask[..., Any], *, fallback: bool = True) -> BaseTaskBackend | None:
    """Return the task's own backend if it is one of ours, else (``fallback``) any of ours."""
    try:
        backend = task.get_backend()
    except ImproperlyConfigured:
        backend = None
    if _ours(backend):
        return backend
    return next(configured_backends(), None) if fallback else None
