"""Enqueuing many calls of one task in one go: ``TaskFunction.bulk()``.

Every call is checked before anything is written; the rows then go through the one insert path
(``enqueue.insert_tasks()``), which writes them in one transaction with multi-row INSERTs.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import router
from django.utils import timezone

from .conf import app_settings
from .enqueue import insert_tasks
from .exceptions import InvalidTaskError
from .serialization import decode_params
from .task_rows import RowMaker, call_params, call_rows

if TYPE_CHECKING:
    from .models import Task
    from .task_function import TaskFunction

#: The call options ``call_rows()`` takes; ``unique`` is applied here, and
#: ``remove_existing_tasks`` is an option of the whole bulk call.
_ROW_OPTIONS = frozenset(
    {"schedule", "priority", "queue", "verbose_name", "creator", "repeat", "repeat_until"}
)
#: Every call option (``task_function.RESERVED_KWARGS``, which sits above this module).
CALL_OPTIONS = _ROW_OPTIONS | {"unique", "remove_existing_tasks"}


@dataclass(frozen=True)
class TaskCall:
    """One call of a task, with its own options, as an item of ``TaskFunction.bulk()``.

    Made by ``task.call(*args, **kwargs)``, which takes the same arguments and call options
    as calling the task.
    """

    task_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


def enqueue_many(
    task: TaskFunction[Any, Any],
    calls: Iterable[Any],
    options: dict[str, Any],
    *,
    batch_size: int | None = None,
) -> list[Task]:
    """Check every call of ``calls``, then insert their rows together; return them in order."""
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InvalidTaskError(f"bulk(): batch_size must be an integer >= 1, not {batch_size!r}.")
    from .models import Task

    with _collector_paused():
        rows, alike = _checked_rows(task, calls, options)
    if app_settings.IMMEDIATE:
        # Task bodies run with the collector on: they are the project's code, not rows.
        for row in rows:
            call_args, call_kwargs = decode_params(row.params)
            task.run_body(call_args, call_kwargs)
        return rows
    replace = options.get("remove_existing_tasks")
    if replace is None:
        replace = task.remove_existing_tasks
    with _collector_paused():
        return insert_tasks(
            rows,
            using=router.db_for_write(Task),
            replace=bool(replace),
            batch_size=batch_size,
            template=rows[0] if alike and rows else None,
        )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the time of a bulk call, if it runs.

    Every row is a few new containers (the model instance, its state, its arguments) that
    all outlive the call. The collector, run every 700 new containers, would examine them
    again and again, and every few thousand rows every object of the process: a third of the
    Python time of a bulk call of 10,000 rows, to find no garbage. Whatever cycles the call
    leaves are collected by the next collection after it. (The collector is one switch for
    the process: a thread that switches it off while a bulk call runs sees it on again after.)
    Paused while the calls are checked and while their rows are written (``task_created``
    receivers included), not while task bodies run (``IMMEDIATE``).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _checked_rows(
    task: TaskFunction[Any, Any], calls: Iterable[Any], options: dict[str, Any]
) -> tuple[list[Task], bool]:
    """Check every call and build its row; return the rows, and whether all are alike."""
    now = timezone.now()
    shared = {key: value for key, value in options.items() if key in _ROW_OPTIONS}
    unique = options.get("unique")
    shared_unique = task.unique if unique is None else unique
    # Makes the rows of the calls without options of their own.
    like: RowMaker | None = None
    # Whether every row is like the first (no call with options of its own, none unique): then
    # the insert path checks and writes their shared values once.
    alike = not shared_unique
    rows: list[Task] = []
    for index, item in enumerate(calls):
        if like is not None and type(item) is tuple:
            # The most common item, positional arguments with the shared options: the loop's
            # fast path, the same checks as below.
            try:
                row = like(call_params(task, item, {}))
            except (TypeError, ValueError) as exc:
                raise _at(index, exc) from exc
            if shared_unique:
                row.unique_key = row.task_hash
            rows.append(row)
            continue
        args, kwargs, own = _parse(task, index, item)
        try:
            if like is not None and not own:
                row = like(call_params(task, args, kwargs))
            else:
                merged = {**shared, **{k: v for k, v in own.items() if k in _ROW_OPTIONS}}
                params = call_params(task, args, kwargs)
                make = call_rows(task, now=now, **merged)
                row = make(params)
                if not own:
                    like = make
        except (TypeError, ValueError) as exc:
            raise _at(index, exc) from exc
        if own:
            alike = False
            unique = own.get("unique", options.get("unique"))
            if unique if unique is not None else task.unique:
                row.unique_key = row.task_hash
        elif shared_unique:
            row.unique_key = row.task_hash
        rows.append(row)
    return rows, alike


def _parse(
    task: TaskFunction[Any, Any], index: int, item: object
) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    """Return the positional arguments, keyword arguments and own options of one item."""
    if isinstance(item, TaskCall):
        if item.task_name != task.name:
            raise InvalidTaskError(
                f"Item {index} of the bulk call is a call of {item.task_name!r}, "
                f"not of {task.name!r}."
            )
        args, kwargs, own = item.args, item.kwargs, item.options
    elif isinstance(item, (tuple, list)):
        args, kwargs, own = tuple(item), {}, {}
    elif isinstance(item, dict):
        if not all(isinstance(key, str) for key in item):
            raise InvalidTaskError(
                f"Item {index} of the bulk call is a dict with a key that is not a string: "
                "a dict item holds keyword arguments."
            )
        args = ()
        kwargs = {key: value for key, value in item.items() if key not in CALL_OPTIONS}
        own = {key: value for key, value in item.items() if key in CALL_OPTIONS}
    else:
        raise InvalidTaskError(
            f"Item {index} of the bulk call is {item!r}: pass a tuple of positional arguments "
            f"(such as ({item!r},)), a dict of keyword arguments, or {task.name.rsplit('.')[-1]}"
            ".call(...)."
        )
    if "remove_existing_tasks" in own:
        raise InvalidTaskError(
            f"Item {index} of the bulk call sets remove_existing_tasks: it is an option of the "
            "whole bulk call, pass it to bulk()."
        )
    return args, kwargs, own


def _at(index: int, exc: Exception) -> Exception:
    """Return ``exc`` again, as the same class, with the item's index in front of its message."""
    message = f"Item {index} of the bulk call: {exc}"
    try:
        return type(exc)(message)
    except Exception:  # a class whose constructor wants more than a message
        return InvalidTaskError(message)
