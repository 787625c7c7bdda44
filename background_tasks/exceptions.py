"""The exceptions background_tasks raises, all under one base class."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class BackgroundTasksError(Exception):
    """Base class of every error raised by background_tasks."""


class InvalidTaskError(BackgroundTasksError, ValueError):
    """A task definition or a call to one is invalid."""


class InvalidTaskArguments(BackgroundTasksError, TypeError):
    """Task arguments cannot be stored as JSON or do not fit the function."""


class TaskNotRegistered(BackgroundTasksError, LookupError):
    """No task is registered under the requested name."""


class DuplicateTaskName(BackgroundTasksError, ImproperlyConfigured):
    """Two different functions were registered under one task name."""


class DuplicateScheduleName(BackgroundTasksError, ImproperlyConfigured):
    """Two different places in code declared a cron schedule under one name."""


class PermanentFailure(BackgroundTasksError):
    """Raise from a task body to fail the task at once, without retries."""


class BodyNotRun(PermanentFailure, TypeError):
    """A task call returned a generator: its body did not run (failed at once, no retries)."""


class TaskCancelled(BackgroundTasksError):
    """Raise from a task body to record the task as cancelled."""


class TaskTimedOut(BackgroundTasksError):
    """A task ran past its hard time limit and its process was stopped."""


class TaskInterrupted(BackgroundTasksError):
    """A task was still running when its worker stopped, more often than MAX_HANDBACKS allows."""


class WorkerLost(BackgroundTasksError):
    """The worker running a task died or stopped sending heartbeats."""


class NotMigrated(BackgroundTasksError, ImproperlyConfigured):
    """The database lacks background_tasks' tables: ``python manage.py migrate`` was not run."""


class MalformedRow(BackgroundTasksError):
    """A task row holds a value that keeps it from being run or its outcome from being recorded."""


class TaskRedefinedWarning(RuntimeWarning):
    """A task's definition was executed again and replaced the registered one."""


class ScheduleRedefinedWarning(RuntimeWarning):
    """A schedule's declaration in code was executed again and replaced the earlier one."""
