"""A call of a registered task → the unsaved ``Task`` row it becomes, every option checked.

Every row made from a call is made here, by ``build_row()`` or by a ``RowMaker`` from
``call_rows()``: the call's options are checked once and become a template row (one
``Model.__init__``), and each call's row is a copy of it with the call's arguments. A task keeps
the template of its calls that set no option but ``schedule`` (the common call), so that such a
call costs a copy, not a model instance built field by field. Kept apart from the insert path
(``enqueue.py``), which writes rows however they were made.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from datetime import datetime, tzinfo
from datetime import timezone as dt_timezone
from typing import TYPE_CHECKING, Any

from django.db import models, router
from django.db.models.base import ModelState
from django.utils import timezone

from . import timing
from .columns import (
    OBJECT_ID_LENGTH,
    VERBOSE_NAME_LENGTH,
    priority_problem,
    queue_problem,
    text_problem,
)
from .exceptions import InvalidTaskError
from .options import call_queue_and_priority
from .serialization import check_signature, encode_params, params_hasher
from .timezones import aware, to_db

if TYPE_CHECKING:
    from .models import Task
    from .task_function import TaskFunction


def build_row(
    task: TaskFunction[Any, Any],
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    *,
    now: datetime,
    schedule: Any = None,
    priority: int | None = None,
    queue: str | None = None,
    verbose_name: str | None = None,
    creator: models.Model | None = None,
    repeat: Any = None,
    repeat_until: datetime | None = None,
) -> Task:
    """Validate a call and return the unsaved Task row it becomes."""
    params = call_params(task, args, kwargs)
    make = call_rows(
        task,
        now=now,
        schedule=schedule,
        priority=priority,
        queue=queue,
        verbose_name=verbose_name,
        creator=creator,
        repeat=repeat,
        repeat_until=repeat_until,
    )
    return make(params)


def call_rows(
    task: TaskFunction[Any, Any],
    *,
    now: datetime,
    schedule: Any = None,
    priority: int | None = None,
    queue: str | None = None,
    verbose_name: str | None = None,
    creator: models.Model | None = None,
    repeat: Any = None,
    repeat_until: datetime | None = None,
) -> RowMaker:
    """Check the options of calls of ``task`` made at ``now``; return the maker of their rows.

    A call that sets no option but ``schedule`` gets a copy of the task's own template, with
    the call's times: the template is built and checked on the first such call, and again when
    a default it holds changes (the settings' queue or priority).
    """
    if (
        queue is None
        and priority is None
        and verbose_name is None
        and creator is None
        and repeat is None
        and repeat_until is None
    ):
        times = _times(task, now, schedule)  # checked first, as for a call with options
        return _default_rows(task).at(times)
    return RowMaker(
        _template(
            task,
            now=now,
            schedule=schedule,
            priority=priority,
            queue=queue,
            verbose_name=verbose_name,
            creator=creator,
            repeat=repeat,
            repeat_until=repeat_until,
        )
    )


def _template(
    task: TaskFunction[Any, Any],
    *,
    now: datetime,
    schedule: Any,
    priority: int | None,
    queue: str | None,
    verbose_name: str | None,
    creator: models.Model | None,
    repeat: Any,
    repeat_until: datetime | None,
) -> Task:
    """Check a call's options and return the row of its calls, without arguments yet."""
    Task = task_model()
    times = _times(task, now, schedule, repeat, repeat_until)
    queue, priority = call_queue_and_priority(task, queue, priority)
    problem = priority_problem(priority)
    if problem:
        raise InvalidTaskError(f"Task {task.name!r}: priority {problem}.")
    problem = queue_problem(queue)
    if problem:
        raise InvalidTaskError(f"Task {task.name!r}: queue {problem}.")
    if verbose_name is not None:
        if not isinstance(verbose_name, str):
            raise InvalidTaskError(
                f"Task {task.name!r}: verbose_name must be a string, not {verbose_name!r}."
            )
        check_text(task.name, "verbose_name", verbose_name, VERBOSE_NAME_LENGTH)

    row = Task(
        task_name=task.name,
        params=None,  # each row's own, with its hash
        task_hash="",
        verbose_name=verbose_name or "",
        queue=queue,
        priority=priority,
        max_attempts=task.max_attempts,
        **times,
    )
    if creator is not None:
        _set_creator(task.name, row, creator, router.db_for_write(Task))
    return row


def _times(
    task: TaskFunction[Any, Any],
    now: datetime,
    schedule: Any,
    repeat: Any = None,
    repeat_until: Any = None,
) -> dict[str, Any]:
    """Check a call's times; return its time columns: when it runs, its repeats, its clock."""
    # The maths is in aware datetimes; the row gets what its columns hold (naive without USE_TZ).
    clock = aware(now)
    schedule = task.schedule if schedule is None else schedule
    tz = _zone_for(schedule, repeat_until)
    run_at = to_db(timing.resolve_run_at(schedule, clock, tz))
    repeat_spec = timing.encode_repeat(repeat)
    if repeat_until is not None:
        repeat_until = (
            to_db(timing.resolve_run_at(repeat_until, clock, tz))
            if isinstance(repeat_until, datetime)
            else _bad_repeat_until(task.name, repeat_until)
        )
    return {
        "run_at": run_at,
        "scheduled_at": run_at,
        "repeat": repeat_spec,
        "repeat_until": repeat_until,
        "repeat_anchor": run_at if repeat_spec else None,
        # The call's clock, as ``run_at`` of a call that runs now: the same instant.
        "created_at": to_db(clock),
    }


class RowMaker:
    """Makes the rows of calls with the same options: copies of one checked template row.

    Building a model instance field by field costs more than checking and encoding the call's
    arguments. A row differs from the template only in ``params`` and ``task_hash`` (what
    ``insert_tasks(template=...)`` relies on), and its ``unique_key`` is None. Each row gets its
    own copy of the template's lists and dicts (a model's ``default=list``); other values are
    shared, and not changed in place by anything.
    """

    __slots__ = ("_fields_cache", "_hash", "_model", "_mutable", "_spare", "_state")

    def __init__(self, template: Task, *, spare: bool = True) -> None:
        """Copy ``template``'s values; with ``spare``, the first row is ``template`` itself."""
        state = template.__dict__.copy()
        del state["_state"]
        state["unique_key"] = None
        self._mutable = tuple(name for name, value in state.items() if type(value) in (list, dict))
        for name in self._mutable:
            state[name] = state[name].copy()
        self._state = state
        #: The related objects the template holds (the creator, when there is one).
        self._fields_cache = dict(template._state.fields_cache)
        self._model = type(template)
        self._hash = _hasher(template.task_name)
        self._spare = template if spare else None

    def at(self, times: dict[str, Any]) -> RowMaker:
        """Return a maker of the same rows with other time columns (from ``_times()``)."""
        maker = RowMaker.__new__(RowMaker)
        maker._state = {**self._state, **times}
        maker._mutable = self._mutable
        maker._fields_cache = self._fields_cache
        maker._model = self._model
        maker._hash = self._hash
        maker._spare = None
        return maker

    def __call__(self, params: dict[str, Any]) -> Task:
        """Return the new unsaved row of a call with these (checked) ``params``."""
        row = self._spare
        if row is not None:
            self._spare = None
        else:
            values = self._state.copy()
            for name in self._mutable:
                values[name] = values[name].copy()
            row_state = values["_state"] = ModelState()
            if self._fields_cache:
                row_state.fields_cache = dict(self._fields_cache)
            row = self._model.__new__(self._model)
            # The instance's attributes at once: what Model.__init__ would set one by one.
            row.__dict__ = values
        row.params = params
        row.task_hash = self._hash(params)
        return row


#: Each task's maker of the rows of its calls that set no option but ``schedule``, with the
#: defaults it holds. Weak: a task that is no longer referenced takes its template along.
_DEFAULT_ROWS: weakref.WeakKeyDictionary[
    TaskFunction[Any, Any], tuple[tuple[Any, ...], RowMaker]
] = weakref.WeakKeyDictionary()


def _default_rows(task: TaskFunction[Any, Any]) -> RowMaker:
    """Return the maker of ``task``'s rows of calls without options; new if a default changed."""
    queue, priority = call_queue_and_priority(task, None, None)
    defaults = (task.name, queue, priority, task.max_attempts)
    known = _DEFAULT_ROWS.get(task)
    if known is not None and known[0] == defaults:
        return known[1]
    template = _template(
        task,
        now=timezone.now(),
        schedule=None,
        priority=None,
        queue=None,
        verbose_name=None,
        creator=None,
        repeat=None,
        repeat_until=None,
    )
    maker = RowMaker(template, spare=False)
    _DEFAULT_ROWS[task] = (defaults, maker)
    return maker


@functools.lru_cache(maxsize=1024)
def _hasher(task_name: str) -> Callable[[dict[str, Any]], str]:
    """Return ``params_hasher(task_name)``, built once per task name."""
    return params_hasher(task_name)


@functools.cache
def task_model() -> type[Task]:
    """Return the Task model: imported on first use, once the app registry is ready."""
    from .models import Task

    return Task


def call_params(
    task: TaskFunction[Any, Any], args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Check that a call's arguments fit the function and are JSON; return them as stored."""
    check_signature(task.name, task.func, args, kwargs)
    return encode_params(task.name, task.func, args, kwargs)


def _zone_for(*times: object) -> tzinfo:
    """Return the current time zone if a naive datetime among ``times`` needs one, else UTC.

    Only wall-clock times are read in the current time zone; looking it up costs a context
    variable read, which an enqueue without one is spared.
    """
    if any(isinstance(t, datetime) and t.utcoffset() is None for t in times):
        return timezone.get_current_timezone()
    return dt_timezone.utc


def _bad_repeat_until(task_name: str, value: object) -> datetime:
    raise TypeError(f"Task {task_name!r}: repeat_until must be a datetime, not {value!r}.")


def check_text(task_name: str, option: str, value: str, max_length: int) -> None:
    problem = text_problem(value, max_length)
    if problem:
        raise InvalidTaskError(
            f"Task {task_name!r}: {option} {value[:80]!r} is refused: {problem}."
        )


def _set_creator(task_name: str, row: Task, creator: object, using: str) -> None:
    # Django's own notion of saved: a primary key set by a default (a UUID) is no proof.
    if not isinstance(creator, models.Model) or creator._state.adding or creator.pk is None:
        raise TypeError(
            f"Task {task_name!r}: creator must be a saved model instance, not {creator!r}."
        )
    if creator._state.db != using:
        raise InvalidTaskError(
            f"Task {task_name!r}: creator {creator!r} is in database {creator._state.db!r}, "
            f"but tasks are written to {using!r}, and a task can only point at an object in its "
            "own database. Leave creator out, or keep the creator's table beside the task tables "
            "(see the routing section of docs/installation.md)."
        )
    object_id = str(creator.pk)
    if len(object_id) > OBJECT_ID_LENGTH:
        raise InvalidTaskError(
            f"Task {task_name!r}: creator's primary key is {len(object_id)} characters long, "
            f"and the column holds {OBJECT_ID_LENGTH}."
        )
    row.creator = creator
