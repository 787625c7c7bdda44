"""Django's task signals, sent from background_tasks' own for rows of Django Tasks.

``task_started`` at every attempt, ``task_finished`` once, when the task ends as SUCCESSFUL or
FAILED (an attempt that will be retried leaves it READY). A failing receiver is logged and never
stops the worker from recording the outcome. ``connect()`` is called from ``AppConfig.ready()``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import signals
from .backend import DatabaseBackend
from .framework import task_finished, task_started
from .resolve import backend_of, django_task_named
from .results import as_run, result_of_completed, result_of_queued

if TYPE_CHECKING:
    from ..models import CompletedTask
    from ..models import Task as QueuedTask

logger = logging.getLogger("background_tasks")

_DISPATCH_UID = "background_tasks.django_tasks"


def _send(signal_name: str, row: QueuedTask, completed: CompletedTask | None) -> None:
    task = django_task_named(row.task_name)
    if task is None:
        return
    try:
        backend = backend_of(task)
        sender = type(backend) if backend is not None else DatabaseBackend
        alias = backend.alias if backend is not None else task.backend
        if completed is None:
            result = result_of_queued(row, as_run(task, row, alias), alias)
            task_started.send(sender=sender, task_result=result)
        else:
            result = result_of_completed(completed, as_run(task, completed, alias), alias)
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


def connect() -> None:
    """Connect the bridge to background_tasks' signals (again: a no-op)."""
    signals.task_started.connect(_on_started, dispatch_uid=_DISPATCH_UID)
    for signal in (signals.task_succeeded, signals.task_gave_up, signals.task_cancelled):
        signal.connect(_on_finished, dispatch_uid=_DISPATCH_UID)
