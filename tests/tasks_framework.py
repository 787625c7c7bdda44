"""Django's tasks framework for the tests: ``django.tasks`` (Django 6.0+) or the backport.

On Django 5.2 the ``django-tasks`` backport (import name ``django_tasks``, installed by the
``[django-tasks]`` extra) provides the same API; ``AVAILABLE`` is False when neither exists.
"""

from __future__ import annotations

from typing import Any

AVAILABLE = True
NAME = "django.tasks"

try:
    from django.tasks import (
        TaskContext,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:
    try:
        from django_tasks import (  # type: ignore[no-redef]
            TaskContext,
            TaskResultStatus,
            default_task_backend,
            task,
            task_backends,
        )
        from django_tasks.exceptions import (  # type: ignore[no-redef]
            InvalidTaskBackendError as InvalidTaskBackend,
        )
        from django_tasks.exceptions import (  # type: ignore[no-redef]
            InvalidTaskError as InvalidTask,
        )
        from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[no-redef]
        from django_tasks.signals import (  # type: ignore[no-redef]
            task_enqueued,
            task_finished,
            task_started,
        )

        NAME = "django_tasks (backport)"
    except ImportError:
        AVAILABLE = False
        TaskContext = TaskResultStatus = default_task_backend = task = task_backends = Any
        InvalidTask = InvalidTaskBackend = TaskResultDoesNotExist = Any
        task_enqueued = task_finished = task_started = Any

SKIP_REASON = "needs django.tasks (Django 6.0+) or the django-tasks backport"

__all__ = [
    "AVAILABLE",
    "NAME",
    "SKIP_REASON",
    "InvalidTask",
    "InvalidTaskBackend",
    "TaskContext",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "default_task_backend",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
