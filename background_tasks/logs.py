"""Log lines for task events, written by signal receivers as ``key=value`` pairs.

Values come from rows anyone with database or admin access can write (task names, worker
ids, error messages), so each one goes through :func:`shown`: a value with a space, a quote, an
``=`` or a control character is quoted and escaped, and a huge one is cut short, so that no
value can forge a line or a key of its own.
"""

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


#: The longest value a log line shows, in characters.
MAX_SHOWN = 2000
_QUOTED = frozenset('="\\')


class shown:
    """Format a log value lazily: plain when safe, else quoted with escapes."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        text = str(self.value)
        if len(text) > MAX_SHOWN:
            text = f"{text[:MAX_SHOWN]}...({len(text) - MAX_SHOWN} more characters)"
        if text and all(c.isprintable() and not c.isspace() and c not in _QUOTED for c in text):
            return text
        escaped = "".join(
            "\\" + c
            if c in '"\\'
            else c
            if c.isprintable()
            else c.encode("unicode_escape").decode("ascii")
            for c in text
        )
        return f'"{escaped}"'


@receiver(signals.task_started)
def _log_started(sender: str, task: Any, worker_id: str, **kwargs: Any) -> None:
    _attempt.started = (task.pk, time.monotonic())
    logger.debug(
        "event=task_started task=%s task_id=%s attempt=%s worker=%s",
        shown(sender),
        task.pk,
        task.attempts,
        shown(worker_id),
    )


@receiver(signals.task_succeeded)
def _log_succeeded(sender: str, task: Any, completed: Any, **kwargs: Any) -> None:
    logger.info(
        "event=task_succeeded task=%s task_id=%s attempt=%s duration=%s",
        shown(sender),
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
        "event=task_failed task=%s task_id=%s attempt=%s duration=%s will_retry=%s error=%s",
        shown(sender),
        task.pk,
        task.attempts,
        _duration(task),
        will_retry,
        shown(repr(exception)),
    )


@receiver(signals.task_gave_up)
def _log_gave_up(sender: str, task: Any, **kwargs: Any) -> None:
    logger.error(
        "event=task_gave_up task=%s task_id=%s attempts=%s", shown(sender), task.pk, task.attempts
    )


@receiver(signals.task_cancelled)
def _log_cancelled(sender: str, task: Any, completed: Any = None, **kwargs: Any) -> None:
    logger.info(
        "event=task_cancelled task=%s task_id=%s attempt=%s duration=%s",
        shown(sender),
        task.pk,
        task.attempts,
        _duration(task, completed),
    )
