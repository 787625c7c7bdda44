"""Moving a held task to the history: the fenced delete and the history insert, as plain SQL.

These two statements run for every task a worker finishes. Through the ORM
(``QuerySet.delete()``, ``Model.save()``) they cost more Python than the database takes to run
them, so their SQL is built once per database from the models' metadata and only the values
are converted per task, with each field's own ``get_db_prep_save`` (what ``save()`` does).

On PostgreSQL one statement does both, the delete feeding the insert::

    WITH moved AS (DELETE FROM task WHERE id = %s AND locked_by = %s RETURNING id)
    INSERT INTO completed (...) SELECT CAST(%s AS ...), ... FROM moved RETURNING id

so that the history row is written only if the fenced delete matched. On MySQL/MariaDB, where
the connection takes several statements in one round trip (mysqlclient's default), both go in
one batch, the insert asking the delete's row count::

    DELETE FROM task WHERE id = %s AND locked_by = %s AND locked_at = %s;
    INSERT INTO completed (...) SELECT %s, ... FROM DUAL WHERE ROW_COUNT() = 1

Elsewhere the delete comes first and the insert follows it only if it matched, in the caller's
transaction.

On MariaDB a transaction that records several outcomes (a batch, runner.py) may group their
moves (:func:`grouped_moves`): each move is noted instead of sent, and all of them go at the
end of the transaction in one round trip, one statement each for the whole group::

    DELETE FROM task WHERE id IN (...) AND (id, locked_by, locked_at) IN (...) RETURNING id;
    INSERT INTO completed (...) VALUES (...), (...) RETURNING id

On that server a statement costs more than the rows it writes (a single-row history insert
takes about twice as long per row as one of ten rows, a single-row delete four times). Should
the delete find a row no longer held (taken by another worker meanwhile), the group raises
:class:`MovesNotHeld`: the caller's transaction rolls back, and the caller writes each outcome
on its own, where the one not held is dropped as always.

The values are converted once per field as the field's ``get_db_prep_save`` would, with a
shortcut per field for the common types (text as ``str``, an ``int``, an aware ``datetime``, a
``dict`` or ``list`` for JSON), worked out once per connection; any other value takes the
field's own conversion.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from .packets import checked_size
from .serialization import params_hash
from .short_transactions import next_result, takes_batches

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Field

    from .models import CompletedTask


@cache
def _fields() -> tuple[Field[Any, Any], ...]:
    from .models import CompletedTask

    return tuple(f for f in CompletedTask._meta.concrete_fields if not f.primary_key)


#: Returned by a shortcut for a value it does not handle: the field's own conversion runs.
_SLOW: Any = object()

_Quick = Callable[[Any], Any]


@dataclass(frozen=True)
class _Statements:
    """The SQL of one connection, built once (it depends on the vendor and its version)."""

    delete: str  # fenced by ``locked_by = %s AND locked_at = %s``
    delete_unstamped: str  # fenced by ``locked_by = %s AND locked_at IS NULL`` (made by hand)
    delete_unheld: str  # fenced by ``locked_by IS NULL`` (a task no worker claimed)
    insert: str  # the head: INSERT INTO table (columns)
    returning: str  # " RETURNING id", or "" where the database cannot
    casts: str  # PostgreSQL: the SELECT list of the move, each value cast to its column's type
    insert_if_deleted: str  # MySQL: the insert, if the statement before it deleted one row
    group_delete: str  # MariaDB: the head of a group's fenced delete, up to WHERE
    task_pk: str  # the task table's primary key column
    group_fence: str  # MariaDB: the fenced row, (id, locked_by, locked_at)
    pk: str  # the history table's primary key column
    #: Per history column: its attribute, its field, and the shortcut for common values.
    preparers: tuple[tuple[str, Field[Any, Any], _Quick | None], ...]


_statements: weakref.WeakKeyDictionary[BaseDatabaseWrapper, _Statements] = (
    weakref.WeakKeyDictionary()
)


def _statements_of(connection: BaseDatabaseWrapper) -> _Statements:
    found = _statements.get(connection)
    if found is None:
        found = _statements[connection] = _build(connection)
    return found


def _build(connection: BaseDatabaseWrapper) -> _Statements:
    from .models import CompletedTask, Task

    quote = connection.ops.quote_name
    task_table = quote(Task._meta.db_table)
    locked_by = quote(Task._meta.get_field("locked_by").column)
    locked_at = quote(Task._meta.get_field("locked_at").column)
    delete = f"DELETE FROM {task_table} WHERE {quote(Task._meta.pk.column)} = %s AND "
    table = quote(CompletedTask._meta.db_table)
    columns = ", ".join(quote(f.column) for f in _fields())
    pk = quote(CompletedTask._meta.pk.column)
    returning = f" RETURNING {pk}" if connection.features.can_return_columns_from_insert else ""
    placeholders = ", ".join(["%s"] * len(_fields()))
    return _Statements(
        delete=f"{delete}{locked_by} = %s AND {locked_at} = %s",
        delete_unstamped=f"{delete}{locked_by} = %s AND {locked_at} IS NULL",
        delete_unheld=f"{delete}{locked_by} IS NULL",
        insert=f"INSERT INTO {table} ({columns})",
        returning=returning,
        casts=", ".join(f"CAST(%s AS {_cast_type(connection, f)})" for f in _fields()),
        insert_if_deleted=(
            f"INSERT INTO {table} ({columns}) SELECT {placeholders} FROM DUAL WHERE ROW_COUNT() = 1"
        ),
        preparers=tuple((f.attname, f, _quick(connection, f)) for f in _fields()),
        group_delete=f"DELETE FROM {task_table} WHERE ",
        task_pk=quote(Task._meta.pk.column),
        group_fence=f"({quote(Task._meta.pk.column)}, {locked_by}, {locked_at})",
        pk=pk,
    )


def _quick(connection: BaseDatabaseWrapper, field: Field[Any, Any]) -> _Quick | None:
    """Return the shortcut of ``field``'s ``get_db_prep_save`` for its common values, if any.

    Each shortcut gives what the field's own conversion gives for the values it takes (its
    ``pre_save`` only reads the attribute: no field here sets a value on save), and ``_SLOW``
    for any other value. Exact types only: a subclass (a lazy or safe string, a bool) takes
    the field's own way.
    """
    from django.db.backends.base.operations import BaseDatabaseOperations
    from django.db.models import (
        BigIntegerField,
        CharField,
        DateTimeField,
        IntegerField,
        JSONField,
        PositiveBigIntegerField,
        PositiveIntegerField,
        TextField,
    )

    kind = type(field)
    ops = connection.ops
    if kind in (CharField, TextField):
        return lambda value: value if value is None or type(value) is str else _SLOW
    if kind in (IntegerField, PositiveIntegerField, BigIntegerField, PositiveBigIntegerField):
        internal = field.get_internal_type()
        if type(ops).adapt_integerfield_value is BaseDatabaseOperations.adapt_integerfield_value:
            return lambda value: value if value is None or type(value) is int else _SLOW
        adapt_int = ops.adapt_integerfield_value
        return lambda value: (
            None if value is None else adapt_int(value, internal) if type(value) is int else _SLOW
        )
    if isinstance(field, DateTimeField) and kind is DateTimeField:
        if field.auto_now or field.auto_now_add:
            return None  # its pre_save sets the value
        adapt_datetime = ops.adapt_datetimefield_value
        # A naive value takes the field's way, which warns about it when USE_TZ is on.
        return lambda value: (
            None
            if value is None
            else adapt_datetime(value)
            if type(value) is datetime and value.tzinfo is not None
            else _SLOW
        )
    if isinstance(field, JSONField) and kind is JSONField:
        adapt_json, encoder = ops.adapt_json_value, field.encoder
        return lambda value: (
            None
            if value is None
            else adapt_json(value, encoder)
            if type(value) in (dict, list)
            else _SLOW
        )
    return None


def _cast_type(connection: BaseDatabaseWrapper, field: Field[Any, Any]) -> str:
    """The type a value is cast to in the move's SELECT list.

    A text column is cast without its length: ``CAST(.. AS varchar(255))`` would cut a longer
    value silently, where the column refuses it (as it does the ORM's insert).
    """
    if field.get_internal_type() == "CharField":
        return str(connection.ops.cast_char_field_without_max_length)
    return str(field.db_type(connection))


def _values(connection: BaseDatabaseWrapper, record: CompletedTask) -> list[Any]:
    if not record.task_hash:  # as TaskBase.save() fills it
        record.task_hash = params_hash(record.task_name, record.params)
    values = []
    for attname, field, quick in _statements_of(connection).preparers:
        value = _SLOW if quick is None else quick(getattr(record, attname))
        if value is _SLOW:
            value = field.get_db_prep_save(field.pre_save(record, True), connection)
        values.append(value)
    return values


def _refuse_oversized(connection: BaseDatabaseWrapper, values: list[Any]) -> int:
    """MySQL/MariaDB: raise DataError if a statement sending ``values`` exceeds the server's
    ``max_allowed_packet``; return at least the bytes they take to send.

    The server would refuse it with an error the worker cannot tell from an outage, and wait
    out for ever (see ``packets``). Refused here, before anything is sent, it is a value the
    database cannot take, as a value it refuses is: a success is then recorded without its
    result.
    """
    return checked_size(connection, values, "the history row")


class MovesNotHeld(Exception):
    """A group of moves found a row it was to delete no longer held (see :func:`grouped_moves`).

    Raised before the caller's transaction commits, which then rolls back whole.
    """


@dataclass(frozen=True)
class _Move:
    fence: list[Any]  # the task's id, its holder, the claim's stamp
    record: CompletedTask
    values: list[Any]
    size: int  # at least the bytes its values take to send (packets.checked_size)


#: The moves noted by the transaction of each connection that groups them.
_groups: weakref.WeakKeyDictionary[BaseDatabaseWrapper, list[_Move]] = weakref.WeakKeyDictionary()


def groups_moves(connection: BaseDatabaseWrapper) -> bool:
    """Return True if this connection can group moves: MariaDB 10.5 or later (``DELETE`` and
    ``INSERT`` with ``RETURNING``), taking several statements in one round trip."""
    return bool(
        connection.vendor == "mysql"
        and getattr(connection, "mysql_is_mariadb", False)
        and connection.features.can_return_rows_from_bulk_insert
        and takes_batches(connection)
    )


@contextmanager
def grouped_moves(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """Group the moves of the block, sent at its end (see the module's docstring).

    Use it inside the transaction, so that the group is sent before the commit. Raises
    :class:`MovesNotHeld` at the end of the block if a row was no longer held, and what the
    database raised if it refused the group (a value, the packet's size): the transaction
    must then roll back. Where the connection cannot group moves (:func:`groups_moves`), or
    inside a block that groups them already, the moves are sent one by one as they come.
    """
    if connection in _groups or not groups_moves(connection):
        yield
        return
    moves = _groups[connection] = []
    try:
        yield
        _send_group(connection, moves)
    finally:
        del _groups[connection]


def _send_group(connection: BaseDatabaseWrapper, moves: list[_Move]) -> None:
    if not moves:
        return
    sql = _statements_of(connection)
    values = [value for move in moves for value in move.values]
    bound = sum(move.size for move in moves)  # each measured as it was noted
    checked_size(connection, values, f"the history rows of {len(moves)} outcomes", bound)
    count = len(moves)
    row = f"({', '.join(['%s'] * len(moves[0].values))})"
    delete = (
        f"{sql.group_delete}{sql.task_pk} IN ({', '.join(['%s'] * count)}) "
        f"AND {sql.group_fence} IN ({', '.join(['(%s, %s, %s)'] * count)}) RETURNING 1"
    )
    insert = f"{sql.insert} VALUES {', '.join([row] * count)} RETURNING {sql.pk}"
    params = [move.fence[0] for move in moves]
    params += [part for move in moves for part in move.fence]
    with connection.cursor() as cursor:
        cursor.execute(f"{delete}; {insert}", [*params, *values])
        deleted = len(cursor.fetchall())
        next_result(connection, cursor)  # the insert's: raises what the insert raised
        inserted = [row[0] for row in cursor.fetchall()]
    if deleted != count:
        raise MovesNotHeld(f"{count - deleted} of {count} tasks were no longer held")
    for move, pk in zip(moves, inserted, strict=True):
        _saved(connection, move.record, pk)


def move_held(
    connection: BaseDatabaseWrapper,
    task_id: int,
    holder: str | None,
    locked_at: datetime | None,
    record: CompletedTask | None,
) -> bool:
    """Delete task ``task_id`` if ``holder`` holds it from the claim that set ``locked_at``, and
    insert ``record`` if it did (``holder`` None: if no worker holds it).

    Return True if the row was held (and so deleted). ``record`` (None: no history kept) gets
    its primary key. Run inside a transaction: off PostgreSQL these are two statements. Inside
    :func:`grouped_moves` a move with a record and a claim is noted and True returned: the group
    sends it, and raises if the row was no longer held.
    """
    sql = _statements_of(connection)
    fence: list[Any] = [task_id]
    if holder is None:
        delete = sql.delete_unheld
    elif locked_at is None:
        delete, fence = sql.delete_unstamped, [task_id, holder]
    else:
        stamp = connection.ops.adapt_datetimefield_value(locked_at)
        delete, fence = sql.delete, [task_id, holder, stamp]
        group = _groups.get(connection)
        if record is not None and group is not None:
            values = _values(connection, record)
            group.append(_Move(fence, record, values, _refuse_oversized(connection, values)))
            return True
    with connection.cursor() as cursor:
        if record is not None and connection.vendor == "postgresql":
            cursor.execute(
                f"WITH moved AS ({delete} RETURNING 1) {sql.insert} SELECT {sql.casts} "
                f"FROM moved{sql.returning}",
                [*fence, *_values(connection, record)],
            )
            row = cursor.fetchone()
            if row is None:
                return False
            _saved(connection, record, row[0])
            return True
        if record is not None and connection.vendor == "mysql" and takes_batches(connection):
            values = _values(connection, record)
            _refuse_oversized(connection, values)
            cursor.execute(f"{delete}; {sql.insert_if_deleted}", [*fence, *values])
            held: bool = cursor.rowcount == 1
            next_result(connection, cursor)  # the insert's: raises what the insert raised
            if held:
                _saved(connection, record, cursor.lastrowid)
            return held
        cursor.execute(delete, fence)
        if cursor.rowcount == 0:
            return False
        if record is not None:
            _insert(connection, cursor, record)
    return True


def insert(connection: BaseDatabaseWrapper, record: CompletedTask) -> None:
    """Insert a history row; set its primary key."""
    with connection.cursor() as cursor:
        _insert(connection, cursor, record)


def _insert(connection: BaseDatabaseWrapper, cursor: Any, record: CompletedTask) -> None:
    from .models import CompletedTask

    sql = _statements_of(connection)
    values = _values(connection, record)
    if connection.vendor == "mysql":
        _refuse_oversized(connection, values)
    placeholders = ", ".join(["%s"] * len(values))
    cursor.execute(f"{sql.insert} VALUES ({placeholders}){sql.returning}", values)
    if sql.returning:
        pk = cursor.fetchone()[0]
    else:
        meta = CompletedTask._meta
        pk = connection.ops.last_insert_id(cursor, meta.db_table, meta.pk.column)
    _saved(connection, record, pk)


def _saved(connection: BaseDatabaseWrapper, record: CompletedTask, pk: Any) -> None:
    """Mark ``record`` as a saved row, as ``save()`` would."""
    record.pk = pk
    record._state.adding = False
    record._state.db = connection.alias


def orm_needed(using: str) -> bool:
    """Return True if deleting a task or saving a record must go through the ORM.

    That is when Django could not delete a task with one plain ``DELETE`` (a project listens to
    its deletes, or a model has a foreign key to it whose ``on_delete`` Django carries out), or
    a project listens to the saves of CompletedTask. The ORM then sends those signals and
    nulls or deletes the referencing rows as it always did. Asked for each outcome (a receiver
    or a model may appear at any time): the signals are asked each time (Django caches their
    receivers per model), the collector's answer about the models is kept until Django's model
    metadata changes (:func:`_fast_delete_by_models`).
    """
    from django.db.models import signals

    from .models import CompletedTask, Task

    return (
        signals.pre_save.has_listeners(CompletedTask)
        or signals.post_save.has_listeners(CompletedTask)
        or signals.pre_delete.has_listeners(Task)
        or signals.post_delete.has_listeners(Task)
        or not _fast_delete_by_models(using)
    )


#: The collector's last answer for Task with no delete receivers, and the metadata cache of
#: Task it was given for (see :func:`_fast_delete_by_models`).
_fast_delete: list[tuple[Any, bool]] = [(None, False)]


def _fast_delete_by_models(using: str) -> bool:
    """Return Django's answer to "can Task rows be deleted with one plain DELETE?".

    Asked when no receiver listens to Task's deletes, the answer depends on the models only
    (foreign keys to Task and their ``on_delete``, parents, generic relations). Django drops
    a model's cached field lists whenever the models change (a model registered later), and
    the answer is kept only while Task's cache is the one it was worked out with.
    """
    from django.db.models.deletion import Collector

    from .models import Task

    fields_cache = getattr(Task._meta, "_get_fields_cache", None)
    known_for, known = _fast_delete[0]
    if fields_cache is not None and known_for is fields_cache:
        return known
    # The model stands for its rows: Django reads only ``_meta`` from what it is given.
    answer = bool(Collector(using=using).can_fast_delete(Task))  # type: ignore[arg-type]
    if fields_cache is not None:
        _fast_delete[0] = (fields_cache, answer)
    return answer


__all__ = ["MovesNotHeld", "grouped_moves", "groups_moves", "insert", "move_held", "orm_needed"]
