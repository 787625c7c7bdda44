"""``@background``: a function becomes a registered task (and, with ``cron=``, a schedule)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, ParamSpec, TypeVar, overload

from .exceptions import InvalidTaskError
from .installed import require_installed
from .registry import registry
from .task_function import TaskFunction
from .timing import resolve_run_at

P = ParamSpec("P")
R = TypeVar("R")


@overload
def background(func: Callable[P, R], /) -> TaskFunction[P, R]: ...
@overload
def background(
    func_or_name: str | None = None,
    /,
    *,
    name: str | None = None,
    schedule: Any = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    backoff: Any = None,
    remove_existing_tasks: bool = False,
    unique: bool = False,
    timeout: float | None = None,
    cron: str | None = None,
    **options: Any,
) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...
def background(
    func_or_name: Any = None,
    /,
    *,
    name: str | None = None,
    schedule: Any = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    backoff: Any = None,
    remove_existing_tasks: bool = False,
    unique: bool = False,
    timeout: float | None = None,
    cron: str | None = None,
    **options: Any,
) -> Any:
    """Register a function as a task: ``@background`` or ``@background(queue=..., ...)``.

    ``name`` defaults to ``<module>.<function name>`` (``__name__``, not ``__qualname__``),
    like django-background-tasks; a string as the only positional argument is taken as the name.
    ``cron="0 3 * * *"`` also declares a schedule (named after the task) that enqueues it at
    every tick; ``periodic()`` does the same with arguments, a time zone and more.

    ``schedule``, ``queue``, ``priority``, ``remove_existing_tasks`` and ``unique`` are
    defaults that a call can override with the keyword of the same name
    (``send(42, queue="urgent")``).

    Args:
        name: The name the row stores and the worker looks up (default: the dotted path).
        schedule: When a call runs by default: seconds from now, a ``timedelta`` from now,
            or a ``datetime`` (default: as soon as possible).
        queue: Queue of the rows (default: ``BACKGROUND_TASKS_DEFAULT_QUEUE``).
        priority: Priority of the rows (default: ``BACKGROUND_TASKS_DEFAULT_PRIORITY``).
        max_attempts: Attempts before the task gives up (default:
            ``BACKGROUND_TASKS_MAX_ATTEMPTS``).
        backoff: Retry delays: a ``Backoff``, a number of seconds, or a function of the
            attempt number returning seconds (default: the ``BACKOFF_*`` settings).
        remove_existing_tasks: A call first deletes the waiting rows with the same name and
            arguments.
        unique: At most one live row (waiting or running) per name and arguments: a call
            while one exists returns the existing row.
        timeout: Hard time limit of an attempt in seconds, enforced by
            ``process_tasks --processes`` (default: ``BACKGROUND_TASKS_MAX_RUN_TIME``).
        cron: A cron expression; the task is also enqueued at every tick.

    Returns:
        A ``TaskFunction`` (or, with options, a decorator that returns one).

    Raises:
        InvalidTaskError: An option is not valid, unknown, or the name is given twice.
        DuplicateTaskName: Another function is already registered under the name.
    """
    if isinstance(func_or_name, str):
        if name is not None:
            raise InvalidTaskError("Give the task name once, either positionally or as name=.")
        name = func_or_name
        func_or_name = None
    if options:
        raise InvalidTaskError(f"@background got unknown option(s): {sorted(options)}.")

    def decorate(func: Callable[P, R]) -> TaskFunction[P, R]:
        if not callable(func):
            raise InvalidTaskError(f"@background decorates functions, not {func!r}.")
        task = TaskFunction(
            func=func,
            name=_default_name(func) if name is None else name,
            schedule=schedule,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            backoff=backoff,
            remove_existing_tasks=remove_existing_tasks,
            unique=unique,
            timeout=timeout,
        )
        require_installed(f"@background is used on {task.name}")
        if schedule is not None:
            _check_schedule(task.name, schedule)
        if cron is not None:
            # Not at import: periodic needs the models, and tasks modules can import this early.
            from .periodic import check_schedule_options
            from .serialization import check_signature

            # Validate before registering, so a bad expression, or a function the schedule
            # cannot call without arguments, leaves nothing half-registered.
            check_schedule_options(f"Task {task.name!r}", cron, "", "once")
            check_signature(task.name, task.func, [], {})
        registry.register(task)
        if cron is not None:
            from .periodic import periodic

            periodic(task, cron)
        return task

    if func_or_name is None:
        return decorate
    return decorate(func_or_name)


def _default_name(func: Callable[..., Any]) -> str:
    """``<module>.<function name>``, as django-background-tasks names tasks (also when nested)."""
    return f"{func.__module__}.{getattr(func, '__name__', type(func).__name__)}"


def _check_schedule(task_name: str, schedule: Any) -> None:
    """Fail at decoration time, not at the first call, when a default schedule is unusable."""
    if isinstance(schedule, bool) or not isinstance(schedule, (int, float, timedelta, datetime)):
        raise InvalidTaskError(
            f"Task {task_name!r}: schedule must be seconds, a timedelta or a datetime, "
            f"not {schedule!r}."
        )
    try:
        resolve_run_at(schedule, datetime.now(timezone.utc), timezone.utc)
    except (TypeError, ValueError) as exc:
        raise InvalidTaskError(f"Task {task_name!r}: {exc}") from None
