"""Signals sent along a task's life. Every one is sent with ``sender`` = the task name.

- ``task_created(task)``: a Task row was enqueued (sent when the row is inserted).
- ``task_started(task, worker_id)``: a worker is about to run an attempt.
- ``task_succeeded(task, completed, result)``: an attempt returned; ``completed`` is the record.
- ``task_failed(task, exception, traceback, will_retry)``: an attempt raised (every attempt).
- ``task_gave_up(task, completed, exception)``: the final failure; no more attempts.
- ``task_cancelled(task, completed)``: the task was cancelled before it finished.
"""

from __future__ import annotations

from django.dispatch import Signal

task_created = Signal()
task_started = Signal()
task_succeeded = Signal()
task_failed = Signal()
task_gave_up = Signal()
task_cancelled = Signal()
