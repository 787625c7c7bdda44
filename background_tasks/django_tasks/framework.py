"""The one import of Django's tasks framework: ``django.tasks`` (Django 6.0 and later), or the
``django-tasks`` backport (import name ``django_tasks``) on Django 5.2.

Every other module of the bridge imports the framework's names from here, so that which of the
two is installed is decided in one place, and a project with neither gets one clear error.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

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
            "pip install 'django-background-tasks-db[django-tasks]', or use @background tasks."
        ) from exc

__all__ = [
    "BaseTaskBackend",
    "DjangoTask",
    "ImmediateBackend",
    "InvalidTask",
    "InvalidTaskBackend",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
