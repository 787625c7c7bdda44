"""A task's effective options: the row's own, else its task function's, else the settings.

Every place that needs a task's attempt budget, backoff, time limit, queue or priority asks
here, so that the worker, the supervisor, the CLI and the admin cannot disagree about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .conf import app_settings
from .registry import registry

if TYPE_CHECKING:
    from .models import Task
    from .task_function import TaskFunction


@dataclass(frozen=True)
class EffectiveOptions:
    """What a task runs with, every default filled in."""

    queue: str
    priority: int
    #: Attempts before the task gives up.
    max_attempts: int
    #: The retry delay policy for ``retry.retry_delay()``; None is the settings' ``Backoff()``.
    backoff: Any
    #: Seconds before a ``--processes`` supervisor kills the attempt; None for no limit.
    time_limit: float | None


def options_of(task: Task | TaskFunction[Any, Any] | str) -> EffectiveOptions:
    """Return the effective options of a Task row, or of a task (or its name) before a row exists.

    For a row, its own ``queue``, ``priority`` and ``max_attempts`` come first; then the
    registered function's options (a name no longer registered has none); then the settings.
    """
    # Told apart by shape, not by class: the task function's module calls the enqueue path,
    # which asks this one, so importing it here would make a circle.
    row: Task | None = None
    function: TaskFunction[Any, Any] | None
    if isinstance(task, str):
        function = registry.get(task) if task in registry else None
    elif hasattr(task, "task_name"):
        row = cast("Task", task)
        function = registry.get(row.task_name) if row.task_name in registry else None
    else:
        function = task
    queue = (function.queue if function else None) or app_settings.DEFAULT_QUEUE
    priority = function.priority if function and function.priority is not None else None
    max_attempts = function.max_attempts if function else None
    if row is not None:
        queue = row.queue or queue
        priority = row.priority
        max_attempts = row.max_attempts or max_attempts
    timeout = function.timeout if function else None
    limit = timeout or app_settings.MAX_RUN_TIME
    return EffectiveOptions(
        queue=queue,
        priority=int(app_settings.DEFAULT_PRIORITY) if priority is None else priority,
        max_attempts=max_attempts or int(app_settings.MAX_ATTEMPTS),
        backoff=function.backoff if function else None,
        time_limit=float(limit) if limit else None,
    )


def call_queue_and_priority(
    function: TaskFunction[Any, Any], queue: str | None, priority: int | None
) -> tuple[str, int]:
    """Return the queue and priority of a call: its own, else the function's, else the settings'.

    The rule of ``options_of()``, reading only the settings the call leaves open: this is on
    the path of every enqueue.
    """
    if queue is None:
        queue = function.queue or app_settings.DEFAULT_QUEUE
    if priority is None:
        priority = function.priority
        if priority is None:
            priority = int(app_settings.DEFAULT_PRIORITY)
    return queue, priority


__all__ = ["EffectiveOptions", "call_queue_and_priority", "options_of"]
