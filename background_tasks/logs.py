"""Log lines for task events, written by signal receivers as ``key=value`` pairs."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import connections
from django.dispatch import receiver

from . import signals

logger = logging.getLogger("background_tasks")

# The attempt each runner thread started last, so that its outcome line can say how long it took
# (a retried attempt leaves no record with a duration). Outcomes are sent from the same thread.
_attempt = threading.local()


def _duration(task: Any, completed: Any = None) -> str:
    """How long the attempt ran, or "-" when this thread did not run it (a rescued task)."""
    if completed is not None and completed.duration is not None:
        return f"{completed.duration:.3f}s"
    started: tuple[Any, float] | None = getattr(_attempt, "started", None)
    if started is None or started[0] != task.pk:
        return "-"
    return f"{time.monotonic() - started[1]:.3f}s"


def database_label(using: str) -> str:
    """Name a database for a log line: vendor, name and alias (never credentials)."""
    connection = connections[using]
    return f"{connection.vendor}:{connection.settings_dict.get('NAME')}(alias={using})"


@receiver(signals.task_started)
def _log_started(sender: str, task: Any, worker_id: str, **kwargs: Any) -> None:
    _attempt.started = (task.pk, time.monotonic())
    logger.debug(
        "event=task_started task=%s task_id=%s attempt=%s worker=%s",
        sender,
        task.pk,
        task.attempts,
        worker_id,
    )


@receiver(signals.task_succeeded)
def _log_succeeded(sender: str, task: Any, completed: Any, **kwargs: Any) -> None:
    logger.info(
        "event=task_succeeded task=%s task_id=%s attempt=%s duration=%s",
        sender,
        task.pk,
        task.attempts,
        _duration(task, completed),
    )


@receiver(signals.task_failed)
def _log_failed(
    sender: str, task: Any, exception: BaseException | None, will_retry: bool, **kwargs: Any
) -> None:
    level = logging.WARNING if will_retry else logging.ERROR
    logger.log(
        level,
        "event=task_failed task=%s task_id=%s attempt=%s duration=%s will_retry=%s error=%r",
        sender,
        task.pk,
        task.attempts,
        _duration(task),
        will_retry,
        exception,
    )


@receiver(signals.task_gave_up)
def _log_gave_up(sender: str, task: Any, **kwargs: Any) -> None:
    logger.error(
        "event=task_gave_up task=%s task_id=%s attempts=%s", sender, task.pk, task.attempts
    )


@receiver(signals.task_cancelled)
def _log_cancelled(sender: str, task: Any, completed: Any = None, **kwargs: Any) -> None:
    logger.info(
        "event=task_cancelled task=%s task_id=%s attempt=%s duration=%s",
        sender,
        task.pk,
        task.attempts,
        _duration(task, completed),
    )
