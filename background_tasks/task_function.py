"""``TaskFunction``: a registered task. Calling it enqueues a Task row; ``.now()`` runs it inline.

Kept apart from the name -> task map in ``registry.py``, which everything below the enqueue path
may read: calling a task enqueues it, so this module sits above ``enqueue.py``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast

from .columns import TASK_NAME_LENGTH, priority_problem, queue_problem, text_problem
from .exceptions import (
    BodyNotRun,
    InvalidTaskError,
)
from .retry import check_backoff

if TYPE_CHECKING:
    from .bulk import TaskCall
    from .models import CompletedTask, Task

P = ParamSpec("P")
R = TypeVar("R")

#: Keyword arguments a call takes for itself instead of passing them to the function.
RESERVED_KWARGS = frozenset(
    {
        "schedule",
        "priority",
        "queue",
        "verbose_name",
        "creator",
        "repeat",
        "repeat_until",
        "remove_existing_tasks",
        "unique",
    }
)


@dataclass(eq=False)
class TaskFunction(Generic[P, R]):
    """A registered task. Calling it enqueues a Task row; ``.now()`` runs it inline.

    ``@background`` makes one; its attributes hold what was declared (``None``: the setting's
    default applies when a call is enqueued or run).

    Attributes:
        func: The decorated function.
        name: The name rows store and the worker looks up.
        schedule: The default run time of a call.
        queue: The default queue.
        priority: The default priority.
        max_attempts: Attempts before the task gives up.
        backoff: The retry delay policy.
        remove_existing_tasks: Whether a call first deletes waiting copies of itself.
        unique: Whether a call returns a live copy of itself instead of inserting another.
        timeout: Hard time limit of an attempt in seconds.
    """

    func: Callable[P, R]
    name: str
    schedule: Any = None
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    backoff: Any = None
    remove_existing_tasks: bool = False
    unique: bool = False
    timeout: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        functools.update_wrapper(self, self.func)
        self._validate()

    @property
    def is_async(self) -> bool:
        """True for an ``async def`` function: the worker runs the coroutine to completion."""
        from asgiref.sync import iscoroutinefunction

        return iscoroutinefunction(self.func)

    def _validate(self) -> None:
        if inspect.isgeneratorfunction(self.func) or inspect.isasyncgenfunction(self.func):
            # Calling a generator function runs none of its body: the worker would record the
            # task as done although nothing happened.
            raise InvalidTaskError(
                f"Task {self.name!r} is a generator function: calling it returns a generator "
                "without running its body, so it cannot be a task. Return a list instead of "
                "yielding the values."
            )
        if not isinstance(self.name, str) or not self.name:
            raise InvalidTaskError(f"A task name must be a non-empty string, not {self.name!r}.")
        problem = text_problem(self.name, TASK_NAME_LENGTH)
        if problem:
            raise InvalidTaskError(f"Task name {self.name[:80]!r} is refused: {problem}.")
        problem = None if self.queue is None else queue_problem(self.queue)
        if problem:
            raise InvalidTaskError(f"Task {self.name!r}: queue {problem}.")
        problem = None if self.priority is None else priority_problem(self.priority)
        if problem:
            raise InvalidTaskError(f"Task {self.name!r}: priority {problem}.")
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise InvalidTaskError(
                f"Task {self.name!r}: max_attempts must be an integer >= 1, "
                f"not {self.max_attempts!r}."
            )
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, (int, float))
            or self.timeout <= 0
        ):
            raise InvalidTaskError(
                f"Task {self.name!r}: timeout must be a number of seconds > 0, "
                f"not {self.timeout!r}."
            )
        check_backoff(self.backoff, self.name)
        clashing = RESERVED_KWARGS & set(_parameter_names(self.func))
        if clashing:
            raise InvalidTaskError(
                f"Task {self.name!r}: parameter(s) {sorted(clashing)} clash with the keyword "
                "arguments "
                "a task call takes for itself; rename them."
            )

    # Loosely typed on purpose: a call also takes the reserved options (schedule=, queue=, ...),
    # which the function's own signature does not list.
    def __call__(self, *args: Any, **kwargs: Any) -> Task:
        """Enqueue a call and return its ``Task`` row, inserted in the current transaction.

        The keyword arguments in ``RESERVED_KWARGS`` configure the call instead of being
        passed to the function: ``schedule``, ``priority``, ``queue``, ``verbose_name``,
        ``creator`` (a model instance recorded on the row), ``repeat`` (seconds, a
        ``timedelta`` or a ``relativedelta`` between occurrences), ``repeat_until``,
        ``remove_existing_tasks`` and ``unique``. With ``BACKGROUND_TASKS_IMMEDIATE`` the
        call runs inline instead.

        Raises:
            InvalidTaskArguments: An argument is not a JSON value that survives a round trip,
                or the arguments do not fit the function's signature.
            InvalidTaskError: A reserved option is not valid.
        """
        options = {key: kwargs.pop(key) for key in list(kwargs) if key in RESERVED_KWARGS}
        return _enqueue()(self, args, kwargs, **options)

    def bulk(
        self,
        calls: Iterable[Any],
        *,
        batch_size: int | None = None,
        schedule: Any = None,
        priority: int | None = None,
        queue: str | None = None,
        verbose_name: str | None = None,
        creator: Any = None,
        repeat: Any = None,
        repeat_until: Any = None,
        remove_existing_tasks: bool | None = None,
        unique: bool | None = None,
    ) -> list[Task]:
        """Enqueue many calls at once and return their ``Task`` rows, in the order given.

        Each item of ``calls`` is one call: a tuple (or list) of positional arguments, a dict
        of keyword arguments, or ``task.call(...)`` for a call with keyword arguments and
        options of its own. The keyword arguments of ``bulk()`` are call options shared by
        every item; an item's own options win.

        Every call is checked before anything is written; an error names the item's index and
        nothing is written. The rows are inserted in the current transaction (else in one
        transaction of their own), in multi-row INSERTs of at most ``batch_size`` rows, and of
        fewer where they are large (on MySQL/MariaDB at most half of ``max_allowed_packet``
        bytes). With ``BACKGROUND_TASKS_IMMEDIATE`` each call runs inline instead, in order.

        Raises:
            InvalidTaskArguments: An item's arguments cannot be stored or do not fit.
            InvalidTaskError: An item or an option is not valid.
            django.db.DataError: On MySQL/MariaDB, an item's row is too large to be sent in
                one statement (``max_allowed_packet``); nothing is written.
        """
        from .bulk import enqueue_many

        given = {
            "schedule": schedule,
            "priority": priority,
            "queue": queue,
            "verbose_name": verbose_name,
            "creator": creator,
            "repeat": repeat,
            "repeat_until": repeat_until,
            "remove_existing_tasks": remove_existing_tasks,
            "unique": unique,
        }
        options = {key: value for key, value in given.items() if value is not None}
        return enqueue_many(self, calls, options, batch_size=batch_size)

    async def abulk(self, calls: Iterable[Any], **options: Any) -> list[Task]:
        """Enqueue many calls from async code; same arguments as ``bulk()``."""
        from asgiref.sync import sync_to_async

        return await sync_to_async(self.bulk)(calls, **options)

    def call(self, *args: Any, **kwargs: Any) -> TaskCall:
        """Return one call of this task, with its own options, as an item for ``bulk()``.

        Takes the same arguments and call options as calling the task; nothing is enqueued.
        """
        from .bulk import TaskCall

        options = {key: kwargs.pop(key) for key in list(kwargs) if key in RESERVED_KWARGS}
        return TaskCall(self.name, args, kwargs, options)

    async def aenqueue(self, *args: Any, **kwargs: Any) -> Task:
        """Enqueue a call from async code (an async view or consumer); same options as a call."""
        from asgiref.sync import sync_to_async

        return await sync_to_async(self.__call__)(*args, **kwargs)

    def now(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline, in this process, without a row.

        An ``async def`` function is run to completion (from sync code only: in async code,
        ``await task.anow(...)``).
        """
        return cast(R, self.run_body(args, kwargs))

    async def anow(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function inline from async code: awaited if async, else in a thread."""
        from asgiref.sync import sync_to_async

        if self.is_async:
            return await cast(Any, self.func)(*args, **kwargs)
        return await sync_to_async(self.func)(*args, **kwargs)

    def run_body(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> Any:
        """Call the function and run its body to completion; return what it returned.

        An ``async def`` function runs in an event loop of its own (``async_to_sync``), so a
        coroutine is never taken for a result. A call that hands back something whose body has
        not run (a coroutine or a generator from a wrapper) is finished or refused here.
        """
        from asgiref.sync import async_to_sync

        if self.is_async:
            return async_to_sync(cast(Any, self.func))(*args, **kwargs)
        result = self.func(*args, **kwargs)
        if inspect.iscoroutine(result):
            return async_to_sync(_awaited)(result)
        if inspect.isgenerator(result):
            result.close()
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            raise BodyNotRun(
                f"Task {self.name!r} returned a generator: its body did not run. A task must "
                "be a plain or async def function."
            )
        return result

    def find(self, task_id: int) -> Task | CompletedTask | None:
        """Return this task's live row with id ``task_id``, else its history record, else None."""
        from .models import CompletedTask, Task

        live = Task.objects.filter(pk=task_id, task_name=self.name).first()
        if live is not None:
            return live
        return (
            CompletedTask.objects.filter(task_id=task_id, task_name=self.name)
            .order_by("-finished_at", "-id")
            .first()
        )

    async def afind(self, task_id: int) -> Task | CompletedTask | None:
        """The async form of ``find()``."""
        from asgiref.sync import sync_to_async

        return await sync_to_async(self.find)(task_id)

    def __repr__(self) -> str:
        return f"<TaskFunction {self.name}>"


@functools.cache
def _enqueue() -> Callable[..., Task]:
    """Return ``enqueue.enqueue``, imported on the first call of a task (it loads the models)."""
    from .enqueue import enqueue

    return enqueue


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _parameter_names(func: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return []
