"""Settings of background_tasks, read lazily so that ``override_settings`` just works.

Every setting is read from ``BACKGROUND_TASKS_<NAME>`` in the Django settings. A few also honour
the name django-background-tasks used (``MAX_ATTEMPTS``, ``MAX_RUN_TIME``,
``BACKGROUND_TASK_PRIORITY_ORDERING``, ``BACKGROUND_TASK_RUN_ASYNC`` with
``BACKGROUND_TASK_ASYNC_THREADS``) when the prefixed name is not set: the prefixed name wins,
then the legacy name, then the default below.
"""

from __future__ import annotations

import os
from typing import Any, Generic, TypeVar, overload

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

T = TypeVar("T")

PREFIX = "BACKGROUND_TASKS_"
_UNSET = object()


class Setting(Generic[T]):
    """A setting with its default and, optionally, the legacy name it also answers to."""

    def __init__(self, default: T, legacy: str | None = None) -> None:
        self.default = default
        self.legacy = legacy
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def setting_name(self) -> str:
        return PREFIX + self.name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Setting[T]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> Setting[T] | T:
        if obj is None:
            return self
        try:
            cached: T = _values[self.name]
            return cached
        except KeyError:
            pass
        value: Any = getattr(django_settings, self.setting_name, _UNSET)
        if value is _UNSET and self.legacy:
            value = getattr(django_settings, self.legacy, _UNSET)
        result: T = self.default if value is _UNSET else value
        _values[self.name] = result
        return result


#: Values read, until a setting changes. Reading a Django setting that is not set raises and
#: catches an AttributeError each time, a few microseconds on the path of every enqueue.
_values: dict[str, Any] = {}


@receiver(setting_changed)
def _forget_values(**kwargs: Any) -> None:
    """Forget the values read: a setting changed (``override_settings``, pytest-django)."""
    _values.clear()


class Settings:
    """The settings object; see docs/settings.md for what each one means."""

    #: Run decorated calls inline instead of enqueuing them (for tests).
    IMMEDIATE = Setting(False)
    #: Import the ``tasks`` module of every installed app at start-up.
    AUTODISCOVER = Setting(True)
    #: Queue of tasks that name none.
    DEFAULT_QUEUE = Setting("default")
    #: Priority of tasks that name none.
    DEFAULT_PRIORITY = Setting(0)
    #: "DESC": a higher priority runs first; "ASC": a lower one does.
    PRIORITY_ORDERING = Setting("DESC", legacy="BACKGROUND_TASK_PRIORITY_ORDERING")
    #: Attempts before a failing task gives up.
    MAX_ATTEMPTS = Setting(25, legacy="MAX_ATTEMPTS")
    #: Default hard time limit of a task in seconds (None: no limit).
    MAX_RUN_TIME: Setting[float | None] = Setting(None, legacy="MAX_RUN_TIME")
    #: Retry delay is ``attempts ** BACKOFF_EXPONENT + BACKOFF_BASE`` seconds ...
    BACKOFF_EXPONENT = Setting(4.0)
    #: ... (the constant part of that delay) ...
    BACKOFF_BASE = Setting(5.0)
    #: ... capped at this many seconds ...
    BACKOFF_MAX = Setting(7 * 24 * 3600.0)
    #: ... and spread by up to this fraction either way.
    BACKOFF_JITTER = Setting(0.1)
    #: Seconds an idle worker waits before it looks for ready tasks again.
    POLL_INTERVAL = Setting(5.0)
    #: On PostgreSQL, wake idle workers with NOTIFY when a ready task is enqueued.
    NOTIFY = Setting(True)
    #: Seconds between two heartbeats of a worker.
    HEARTBEAT_INTERVAL = Setting(10.0)
    #: Seconds without a heartbeat after which a worker counts as lost and its tasks are released.
    RESCUE_AFTER = Setting(60.0)
    #: Seconds a stopping worker lets running tasks finish before it releases them.
    SHUTDOWN_GRACE = Setting(30.0)
    #: First pause (seconds) after a worker loses the database; each failed try doubles it ...
    OUTAGE_BACKOFF_FIRST = Setting(0.5)
    #: ... up to this many seconds.
    OUTAGE_BACKOFF_MAX = Setting(30.0)
    #: Seconds a ``--burst`` worker waits for an unreachable database before it gives up.
    BURST_OUTAGE_LIMIT = Setting(60.0)
    #: Times a task still running at a worker's shutdown is handed back uncounted; after that,
    #: each such hand-back counts as a failed attempt, so a task that never ends gives up.
    MAX_HANDBACKS = Setting(3)
    #: Tasks a runner thread claims at once, after a task shorter than BATCH_WINDOW, and whose
    #: outcomes it records in one commit (1: each task on its own). See "Batching very short
    #: tasks" in docs/delivery-semantics.md.
    BATCH_SIZE = Setting(10)
    #: Seconds a finished task's outcome may wait for the rest of its batch before it is written;
    #: also the task length under which a runner claims a batch, and the time after which the
    #: tasks of a batch waiting behind a longer task are released for others.
    BATCH_WINDOW = Setting(0.005)
    #: Resident memory (MB) past which a worker stops between tasks to be restarted (None: never).
    MAX_MEMORY: Setting[float | None] = Setting(None)
    #: Seconds a cron tick may be late and still run when its schedule skips missed ticks.
    SCHEDULE_MISFIRE_GRACE = Setting(60.0)
    #: Cron schedules defined in settings: {name: {"task": ..., "cron": ..., ...}}.
    SCHEDULES: Setting[dict[str, Any]] = Setting({})
    #: Run the next occurrence of a repeating task even when this one gave up.
    REPEAT_AFTER_FAILURE = Setting(True)
    #: Keep the return value of a task (when it is JSON) in CompletedTask.result.
    STORE_RESULTS = Setting(True)
    #: Seconds between two writes of a running task's progress (set_progress() calls between
    #: them only update the value that the next write, or the end of the task, stores).
    PROGRESS_INTERVAL = Setting(2.0)
    #: Record succeeded tasks in CompletedTask at all (False: a success leaves no row behind).
    RECORD_SUCCEEDED = Setting(True)
    #: Days to keep succeeded, failed and cancelled history before workers prune it (None: keep).
    RETAIN_SUCCEEDED_DAYS: Setting[float | None] = Setting(7)
    RETAIN_FAILED_DAYS: Setting[float | None] = Setting(30)
    RETAIN_CANCELLED_DAYS: Setting[float | None] = Setting(30)
    #: Seconds between two pruning passes of one worker (spread by +-50% at random).
    PRUNE_INTERVAL = Setting(60.0)
    #: History rows one pruning pass deletes at most, per status.
    PRUNE_BATCH_SIZE = Setting(500)

    @property
    def CONCURRENCY(self) -> int:
        """Threads a worker runs tasks in when ``--concurrency`` is not given."""
        value: Any = getattr(django_settings, PREFIX + "CONCURRENCY", _UNSET)
        if value is not _UNSET:
            return int(value)
        if getattr(django_settings, "BACKGROUND_TASK_RUN_ASYNC", False):
            threads = getattr(django_settings, "BACKGROUND_TASK_ASYNC_THREADS", None)
            return int(threads or os.cpu_count() or 1)
        return 1

    @property
    def priority_descending(self) -> bool:
        return str(self.PRIORITY_ORDERING).upper() in ("DESC", "-PRIORITY")


def setting_names() -> list[str]:
    """Return the prefixed name of every setting."""
    names = [s.setting_name for s in vars(Settings).values() if isinstance(s, Setting)]
    return [*names, PREFIX + "CONCURRENCY"]


app_settings = Settings()
