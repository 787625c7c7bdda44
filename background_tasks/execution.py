"""Running one claimed task and recording its outcome."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from . import lifecycle, signals
from .conf import app_settings
from .exceptions import (
    InvalidTaskArguments,
    InvalidTaskError,
    MalformedRow,
    PermanentFailure,
    TaskCancelled,
    TaskNotRegistered,
)
from .isolation import ATTEMPTS_CEILING
from .models import Task
from .outcomes import Outcome
from .registry import registry
from .serialization import check_signature, decode_params, json_problem
from .task_progress import ProgressReporter

logger = logging.getLogger("background_tasks")

_current = threading.local()


def current_task() -> Task | None:
    """Return the Task this thread is running, or None outside a task."""
    return getattr(_current, "task", None)


def is_cancelled() -> bool:
    """Return True if an operator asked to cancel the task this thread is running.

    Long tasks call this between steps and return (or raise TaskCancelled) when it is True; the
    outcome is then recorded as cancelled.
    """
    task = current_task()
    if task is None:
        return False
    if Task.objects.filter(pk=task.pk, cancel_requested_at__isnull=False).exists():
        # Remembered so that a task returning early because of it is recorded as cancelled.
        _current.cancel_seen = True
        return True
    return False


def set_progress(done: int, total: int | None = None, message: str = "") -> None:
    """Report the progress of the task this thread is running: ``done`` of ``total`` steps.

    Call it as often as you like: at most one small write per PROGRESS_INTERVAL seconds reaches
    the database, and the last value is written when the task ends. ``total`` may be None
    (unknown); ``message`` is cut to 255 characters. Outside a task (a call run inline) it does
    nothing.
    """
    reporter: ProgressReporter | None = getattr(_current, "progress", None)
    if reporter is not None:
        reporter.report(done, total, message)


@contextmanager
def _running(task: Task, worker_id: str) -> Iterator[None]:
    reporter = ProgressReporter(task, worker_id)
    _current.task, _current.cancel_seen, _current.progress = task, False, reporter
    try:
        yield
    finally:
        _current.task = _current.progress = None
        reporter.flush()


T = TypeVar("T")


class Persist(Protocol):
    """Runs a database write of an outcome (the worker's version retries through outages).

    It returns what the write returned, or None if it holds the write back for a later commit
    (a worker's batch, ``BATCH_SIZE`` > 1).
    """

    def __call__(self, action: Callable[[], T]) -> T | None: ...


def _once(action: Callable[[], T]) -> T:
    return action()


def execute(task: Task, worker_id: str, persist: Persist = _once) -> Outcome | None:
    """Run a claimed task and record the outcome; return the ``Outcome``.

    Nothing read from the row is imported or evaluated: the name is looked up in the registry,
    and the arguments are JSON. A row that names no registered task, or whose arguments no longer
    fit the function, fails at once with a message saying so. ``persist`` wraps each write of the
    outcome (the worker passes one that retries through database outages, so that a task body
    that ran is never run again just because its outcome could not be written at first).
    """
    if task.cancel_requested_at is not None:
        # Asked to cancel before this attempt began (say, while released by a stopping worker).
        return persist(lambda: _cancelled(task, worker_id, "Cancelled before it ran again."))
    if task.attempts >= ATTEMPTS_CEILING:
        # Set by hand: the claim cannot count this attempt, so the retry policy cannot work.
        reason = (
            f"The attempts counter of this row is at its maximum ({task.attempts}), so its "
            "attempts can no longer be counted; it is not run."
        )
        return persist(
            lambda: lifecycle.record_failure(
                task, worker_id, reason, MalformedRow(reason), permanent=True
            )
        )
    signals.emit(signals.task_started, sender=task.task_name, task=task, worker_id=worker_id)
    try:
        function = registry.get(task.task_name)
        args, kwargs = decode_params(task.params)
        check_signature(task.task_name, function.func, args, kwargs)
    except (TaskNotRegistered, InvalidTaskArguments) as exc:
        unrunnable: BaseException = exc
        return persist(
            lambda: lifecycle.record_failure(
                task, worker_id, str(unrunnable), unrunnable, permanent=True
            )
        )

    try:
        with _running(task, worker_id):
            result = function.run_body(args, kwargs)
            cancel_seen = getattr(_current, "cancel_seen", False)
    except TaskCancelled as exc:
        reason = str(exc) or "Cancelled by the task."
        return persist(lambda: _cancelled(task, worker_id, reason))
    except BaseException as exc:
        # Everything, SystemExit and KeyboardInterrupt included: whatever a task raises is its
        # failure, never the end of the worker thread running it.
        failure: BaseException = exc
        error = traceback.format_exc()
        # InvalidTaskError too: django-background-tasks code raises it to say "do not retry".
        permanent = isinstance(exc, (PermanentFailure, InvalidTaskError))
        return persist(
            lambda: lifecycle.record_failure(task, worker_id, error, failure, permanent=permanent)
        )

    if cancel_seen:
        return persist(lambda: _cancelled(task, worker_id, "Cancelled while running."))
    stored, note = _storable_result(task, result)
    completed = persist(lambda: lifecycle.record_success(task, worker_id, stored, note=note))
    return Outcome.SUCCEEDED if completed is not None else None


def _cancelled(task: Task, worker_id: str, reason: str) -> Outcome | None:
    cancelled = lifecycle.record_cancelled(task, worker_id, reason)
    return Outcome.CANCELLED if cancelled is not None else None


def _storable_result(task: Task, result: Any) -> tuple[Any, str]:
    """Return the result to store and, if it had to be dropped, a note saying why."""
    if result is None or not app_settings.STORE_RESULTS:
        return None, ""
    problem = json_problem(result)
    if problem:
        # The task succeeded: a result that cannot be stored is no reason to run it again.
        logger.warning(
            "event=result_not_stored task=%s task_id=%s reason=%r", task.task_name, task.pk, problem
        )
        return None, f"The result was not stored: {problem}."
    return result, ""
