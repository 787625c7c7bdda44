"""Log lines for task events, written by signal receivers as ``key=value`` pairs."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from . import signals

logger = logging.getLogger("background_tasks")


@receiver(signals.task_started)
def _log_started(sender: str, task: Any, worker_id: str, **kwargs: Any) -> None:
    logger.info(
        "event=task_started task=%s task_id=%s attempt=%s worker=%s",
        sender,
        task.pk,
        task.attempts,
        worker_id,
    )


@receiver(signals.task_succeeded)
def _log_succeeded(sender: str, task: Any, completed: Any, **kwargs: Any) -> None:
    logger.info(
        "event=task_succeeded task=%s task_id=%s duration=%.3fs",
        sender,
        task.pk,
        completed.duration or 0.0,
    )


@receiver(signals.task_failed)
def _log_failed(
    sender: str, task: Any, exception: BaseException | None, will_retry: bool, **kwargs: Any
) -> None:
    level = logging.WARNING if will_retry else logging.ERROR
    logger.log(
        level,
        "event=task_failed task=%s task_id=%s attempt=%s will_retry=%s error=%r",
        sender,
        task.pk,
        task.attempts,
        will_retry,
        exception,
    )


@receiver(signals.task_gave_up)
def _log_gave_up(sender: str, task: Any, **kwargs: Any) -> None:
    logger.error(
        "event=task_gave_up task=%s task_id=%s attempts=%s", sender, task.pk, task.attempts
    )


@receiver(signals.task_cancelled)
def _log_cancelled(sender: str, task: Any, **kwargs: Any) -> None:
    logger.info("event=task_cancelled task=%s task_id=%s", sender, task.pk)
