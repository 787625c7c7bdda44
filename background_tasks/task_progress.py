"""Progress of a running task: reported by the task, written rarely, read back by task id.

A task calls ``set_progress(done, total, message)`` as often as it likes; at most one small
``UPDATE`` per ``PROGRESS_INTERVAL`` seconds reaches the database, fenced by the worker id like
every other write of a held row. The last value reported is written when the attempt ends, and
is kept in the task's ``CompletedTask`` record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DatabaseError, router
from django.utils import timezone

from .conf import app_settings
from .models import CompletedTask, Task

logger = logging.getLogger("background_tasks")

MESSAGE_LENGTH = 255  # TaskBase.progress_message's max_length
_FIELDS = ("progress_done", "progress_total", "progress_message", "progress_at")


@dataclass(frozen=True)
class Progress:
    """What a task last reported, and where the task is now."""

    task_id: int
    #: "waiting" or "running" while the task is live; then "succeeded", "failed" or "cancelled".
    status: str
    done: int | None
    total: int | None
    message: str
    #: When the task reported this value (None: it has reported nothing yet).
    updated_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status not in ("waiting", "running")

    @property
    def fraction(self) -> float | None:
        """Return done / total between 0 and 1, or None when the total is unknown."""
        if self.done is None or not self.total:
            return None
        return min(1.0, self.done / self.total)

    def as_dict(self) -> dict[str, Any]:
        """Return the value as JSON-ready data, for a view a page polls."""
        return {
            "task_id": self.task_id,
            "status": self.status,
            "finished": self.finished,
            "done": self.done,
            "total": self.total,
            "fraction": self.fraction,
            "message": self.message,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


def progress(task_id: int) -> Progress | None:
    """Return the progress of task ``task_id``, live or finished; None if no task has that id."""
    # The database workers write to: a replica's lag would hide a task just enqueued.
    using = router.db_for_write(Task)
    live = Task.objects.using(using).filter(pk=task_id).values("locked_by", *_FIELDS).first()
    if live is not None:
        status = "waiting" if live["locked_by"] is None else "running"
        return _from_row(task_id, status, live)
    record = (
        CompletedTask.objects.using(using)
        .filter(task_id=task_id)
        .order_by("-finished_at", "-id")
        .values("status", *_FIELDS)
        .first()
    )
    if record is None:
        return None
    return _from_row(task_id, str(record["status"]), record)


def _from_row(task_id: int, status: str, row: dict[str, Any]) -> Progress:
    return Progress(
        task_id=task_id,
        status=status,
        done=row["progress_done"],
        total=row["progress_total"],
        message=row["progress_message"],
        updated_at=row["progress_at"],
    )


def _check_count(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"set_progress(): {name} must be an int, not {value!r}.")
    if value < 0:
        raise ValueError(f"set_progress(): {name} must be >= 0, not {value!r}.")


class ProgressReporter:
    """Keep one attempt's latest progress and write it at most once per interval.

    ``clock`` (seconds, monotonic) and ``now`` (the timestamp stored) are injectable so that
    tests can step time without sleeping.
    """

    def __init__(
        self,
        task: Task,
        worker_id: str,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = timezone.now,
    ) -> None:
        self.task = task
        self.worker_id = worker_id
        self.interval = float(app_settings.PROGRESS_INTERVAL if interval is None else interval)
        self.clock = clock
        self.now = now
        self.writes = 0
        self._written_at: float | None = None
        self._pending = False

    def report(self, done: int, total: int | None = None, message: str = "") -> None:
        """Remember a new value; write it now only if the last write is an interval old."""
        _check_count("done", done)
        _check_count("total", total, optional=True)
        if not isinstance(message, str):
            raise TypeError(f"set_progress(): message must be a str, not {message!r}.")
        task = self.task
        # PostgreSQL refuses NUL in text; the column holds MESSAGE_LENGTH characters.
        task.progress_message = message.replace("\x00", "\\x00")[:MESSAGE_LENGTH]
        task.progress_done, task.progress_total = done, total
        task.progress_at = self.now()
        self._pending = True
        due = self._written_at is None or self.clock() - self._written_at >= self.interval
        if due:
            self._write()

    def flush(self) -> None:
        """Write the last value if it has not been written (the attempt is ending).

        A failure is logged, not raised: the outcome of the attempt matters more, and it is
        recorded next (a value that reached the task instance is kept in its CompletedTask).
        """
        if not self._pending:
            return
        try:
            self._write()
        except DatabaseError as exc:
            logger.warning(
                "event=progress_not_written task=%s task_id=%s error=%r",
                self.task.task_name,
                self.task.pk,
                exc,
            )

    def _write(self) -> None:
        task = self.task
        # Fenced: a worker that lost the row (rescued meanwhile) writes nothing.
        Task.objects.using(router.db_for_write(Task)).filter(
            pk=task.pk, locked_by=self.worker_id
        ).update(**{name: getattr(task, name) for name in _FIELDS})
        self._written_at = self.clock()
        self._pending = False
        self.writes += 1


def reset(task: Task) -> None:
    """Clear the progress of ``task`` (a new occurrence or a retry starts from nothing)."""
    task.progress_done = task.progress_total = task.progress_at = None
    task.progress_message = ""


__all__ = ["Progress", "ProgressReporter", "progress"]
