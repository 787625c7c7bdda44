"""A call of a registered task → the unsaved ``Task`` row it becomes, every option checked.

Kept apart from the insert path (``enqueue.py``), which writes rows however they were made.
"""

from __future__ import annotations

import functools
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
from .serialization import check_signature, encode_params, params_hash, params_hasher
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
    Task = task_model()
    params = call_params(task, args, kwargs)
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
        params=params,
        task_hash=params_hash(task.name, params),
        verbose_name=verbose_name or "",
        queue=queue,
        priority=priority,
        run_at=run_at,
        scheduled_at=run_at,
        max_attempts=task.max_attempts,
        repeat=repeat_spec,
        repeat_until=repeat_until,
        repeat_anchor=run_at if repeat_spec else None,
        # The call's clock, as ``run_at`` of a call that runs now: the same instant.
        created_at=to_db(clock),
    )
    if creator is not None:
        _set_creator(task.name, row, creator, router.db_for_write(Task))
    return row


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


def rows_like(template: Task) -> Callable[[dict[str, Any]], Task]:
    """Return a maker of new unsaved rows equal to ``template`` but for their arguments.

    For the calls of a bulk call that share their options: building a model instance field by
    field costs more than checking and encoding the call's arguments. A row differs from the
    template only in ``params`` and ``task_hash`` (what ``insert_tasks(template=...)`` relies
    on), and its ``unique_key`` is None. Each row gets its own copy of the template's lists and
    dicts (a model's ``default=list``); other values are shared, and not changed in place by
    anything.
    """
    model = type(template)
    new = model.__new__
    state = template.__dict__.copy()
    fields_cache = template._state.fields_cache
    del state["_state"]
    state["unique_key"] = None
    mutable = [
        name for name, value in state.items() if type(value) in (list, dict) and name != "params"
    ]
    hash_params = params_hasher(template.task_name)

    def make(params: dict[str, Any]) -> Task:
        values = state.copy()
        for name in mutable:
            values[name] = values[name].copy()
        values["params"] = params
        values["task_hash"] = hash_params(params)
        row_state = values["_state"] = ModelState()
        if fields_cache:  # the creator, when there is one
            row_state.fields_cache = dict(fields_cache)
        row = new(model)
        # The instance's attributes at once: what Model.__init__ would set one by one.
        row.__dict__ = values
        return row

    return make


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
