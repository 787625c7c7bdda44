"""Signals sent along a task's life. Every one is sent with ``sender`` = the task name.

- ``task_created(task)``: a Task row was enqueued (sent when the row is inserted).
- ``task_started(task, worker_id)``: a worker is about to run an attempt.
- ``task_succeeded(task, completed, result)``: an attempt returned; ``completed`` is the record.
- ``task_failed(task, exception, traceback, will_retry)``: an attempt raised (every attempt).
- ``task_gave_up(task, completed, exception)``: the final failure; no more attempts.
- ``task_cancelled(task, completed)``: the task was cancelled before it finished.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("background_tasks")

task_created = Signal()
"""``task``: a Task row was inserted, in the inserting transaction (which may roll back)."""
task_started = Signal()
"""``task``, ``worker_id``: a worker is about to run an attempt."""
task_succeeded = Signal()
"""``task``, ``completed``, ``result``: an attempt returned and its record was written."""
task_failed = Signal()
"""``task``, ``exception``, ``traceback``, ``will_retry``: an attempt raised (every attempt)."""
task_gave_up = Signal()
"""``task``, ``completed``, ``exception``: the final failed attempt; no more attempts."""
task_cancelled = Signal()
"""``task``, ``completed``: the task was recorded as cancelled."""


def emit(signal: Signal, sender: str, **kwargs: Any) -> None:
    """Send a signal from the worker; a receiver that raises is logged, never fatal.

    The outcome of a task is recorded before its signal is sent, so a broken receiver can cost
    a log line but never a task or a worker thread.
    """
    for receiver, response in signal.send_robust(sender=sender, **kwargs):
        if isinstance(response, Exception):
            logger.error(
                "event=signal_receiver_failed signal=%s receiver=%r error=%r",
                _name_of(signal),
                receiver,
                response,
                exc_info=response,
            )


def _name_of(signal: Signal) -> str:
    for name, value in globals().items():
        if value is signal:
            return name
    return repr(signal)
