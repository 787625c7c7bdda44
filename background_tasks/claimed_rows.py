"""Tasks built from the rows a claim statement returned, with no second read.

PostgreSQL and SQLite return the claimed rows from the claim's ``UPDATE … RETURNING``. The
values are converted exactly as the ORM converts a query's columns (the backend's converters,
then the field's), so a task built here equals one loaded by ``Task.objects.get``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from .models import Task


def returning_sql(connection: BaseDatabaseWrapper, qualify: bool) -> str:
    """Return the column list of a ``RETURNING`` clause: every column of the task table.

    The primary key comes first (``id`` is the model's first field): callers read the ids
    from the first column even when the rest cannot be loaded.
    """
    found = _returning.get(connection, {}).get(qualify)
    if found is None:
        from .models import Task

        assert Task._meta.concrete_fields[0].primary_key

        quote = connection.ops.quote_name
        prefix = f"{quote(Task._meta.db_table)}." if qualify else ""
        found = ", ".join(prefix + quote(field.column) for field in Task._meta.concrete_fields)
        _returning.setdefault(connection, {})[qualify] = found
    return found


#: Per connection: the column lists, built once (the MySQL claim asks for one per claim).
_returning: weakref.WeakKeyDictionary[BaseDatabaseWrapper, dict[bool, str]] = (
    weakref.WeakKeyDictionary()
)


#: The attribute names in column order, and per column that has converters: its position, its
#: column expression and its converters in order (most columns have none).
_Converters = tuple[list[str], list[tuple[int, Any, list[Callable[..., Any]]]]]

#: Per connection (each thread has its own): what converting a row takes, worked out once.
_converters: weakref.WeakKeyDictionary[BaseDatabaseWrapper, _Converters] = (
    weakref.WeakKeyDictionary()
)


def _converters_of(connection: BaseDatabaseWrapper) -> _Converters:
    found = _converters.get(connection)
    if found is None:
        from .models import Task

        fields = Task._meta.concrete_fields
        converted = []
        for position, field in enumerate(fields):
            column = field.get_col(Task._meta.db_table)
            steps = [
                *connection.ops.get_db_converters(column),
                *column.get_db_converters(connection),
            ]
            if steps:
                converted.append((position, column, steps))
        found = _converters[connection] = ([field.attname for field in fields], converted)
    return found


def build(connection: BaseDatabaseWrapper, using: str, rows: Sequence[Sequence[Any]]) -> list[Task]:
    """Return a Task per row (columns in ``returning_sql`` order); raise if a value cannot load."""
    from .models import Task

    names, converted = _converters_of(connection)
    tasks = []
    for row in rows:
        values = list(row)
        for i, column, steps in converted:
            value = values[i]
            for convert in steps:
                value = convert(value, column, connection)
            values[i] = value
        tasks.append(Task.from_db(using, names, values))
    return tasks


__all__ = ["build", "returning_sql"]
