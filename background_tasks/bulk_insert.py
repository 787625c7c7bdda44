"""Many new Task rows in few statements, their ids set on them, per database.

``bulk_create()`` prepares and sends every column of every row: for a task table of some thirty
columns that is most of the cost of a bulk enqueue, although the rows of one bulk call differ in
a column or two (the arguments and their hash). On PostgreSQL a column that has one value in
the batch is sent once, and the values that differ go as one JSON document, a row per element:

    INSERT INTO task (task_name, queue, ..., params, task_hash)
    SELECT %s::varchar(255), %s::varchar(100), ..., NULLIF(r.v -> 0, 'null'), (r.v ->> 1)::...
    FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS r(v, n) ORDER BY r.n
    RETURNING id

PostgreSQL inserts the rows in that order and returns them in that order, as for a multi-row
``VALUES`` list (which ``bulk_create()`` relies on too). MariaDB 10.5+ and SQLite 3.35+ get a
multi-row ``VALUES`` list with ``RETURNING``, each shared value prepared once (their drivers
bind parameters cheaply); MySQL cannot return the ids of a multi-row INSERT, so there the rows
are saved one by one (in the caller's transaction). Which columns a batch shares is found by
comparing every column of every row, except for rows known to be copies of one template but
for their arguments (``insert_tasks(template=...)``, the calls of a bulk call that share their
options): their shared values are the template's. Values only Django knows how to write (an
expression) fall back to ``bulk_create()``. Model signals (``pre_save``, ``post_save``) are
not sent, as with ``bulk_create()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from django.db import connections

from .packets import SQL_ALLOWANCE, checked_size, packet_limit, size_bound

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Field
    from django.db.models.options import Options

    from .models import Task


#: A column whose value differs between the rows of a statement (else its value is shared).
_VARIES = object()
#: The columns the rows of one ``task_rows.RowMaker`` differ in.
_VARYING_LIKE = frozenset({"params", "task_hash"})
#: PostgreSQL: the most characters of JSON text sent for one statement's rows. A jsonb value
#: holds at most 256 MB (2**28 - 1 bytes), and the rows of a statement are one value: rows
#: larger together are split into several statements. Well below it: the jsonb form of a
#: document takes up to six times its text (12 bytes for each ``0,`` of an array of zeros).
_DOCUMENT_BUDGET = 32 * 1024 * 1024

#: Each column of a statement with its one value for every row, or ``_VARIES``.
Columns = list[tuple["Field[Any, Any]", Any]]


def insert_rows(
    rows: Sequence[Task],
    using: str,
    batch_size: int,
    *,
    template: Task | None = None,
    measured: Measured | None = None,
) -> None:
    """INSERT new ``rows`` in statements of at most ``batch_size`` rows; set their ids.

    On MySQL/MariaDB a statement also holds at most half of the server's
    ``max_allowed_packet`` in bytes, and a row too large to be sent is refused before any row
    is written (see ``measure_rows()``, whose result for these rows ``measured`` is).

    ``template``: a row every row equals but for ``params`` and ``task_hash`` (see
    ``insert_tasks()``): its values are taken as the shared ones instead of comparing every
    column of every row.
    """
    if not rows:
        return
    connection = connections[using]
    meta = type(rows[0])._meta
    fields = _fields(meta)
    like = _columns_like(fields, template) if template is not None else None
    if connection.vendor == "postgresql":
        # The statement of rows like a template is the same for every batch: built once.
        statement = _json_statement(meta, connection, like) if like is not None else None
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            if statement is None or not _insert_from_json(batch, using, connection, statement):
                columns = _columns(fields, batch)
                built = _json_statement(meta, connection, columns) if columns else None
                if built is None or not _insert_from_json(batch, using, connection, built):
                    _bulk_create(batch, using)
    elif connection.features.can_return_rows_from_bulk_insert:
        size = max(1, min(batch_size, _rows_per_statement(connection, fields, rows)))
        if connection.vendor == "mysql":
            measured = measured or measure_rows(rows, using, template=template)
        if measured is not None:
            budget = packet_limit(connection) // 2
            for start, stop in _spans(measured.sizes, size, budget):
                per_column = [values[start:stop] for values in measured.per_column]
                _insert_values(rows[start:stop], using, connection, measured.columns, per_column)
            return
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            columns = like or _columns(fields, batch)
            if columns is None or _expression_in(columns, batch):
                _bulk_create(batch, using)
            else:
                _insert_values(batch, using, connection, columns)
    else:
        if measured is None and connection.vendor == "mysql":
            measure_rows(rows, using, template=template)  # refuses a row too large to send
        for row in rows:
            row.save(using=using, force_insert=True)


@dataclass(frozen=True)
class Measured:
    """MySQL/MariaDB: the values of rows prepared for their statements, and each row's size."""

    columns: Columns
    #: Each column's prepared values, a value per row.
    per_column: list[list[Any]]
    #: At least the bytes each row's values take in a statement.
    sizes: list[int]


def measure_rows(
    rows: Sequence[Task], using: str, *, template: Task | None = None
) -> Measured | None:
    """MySQL/MariaDB: prepare the values of ``rows`` and measure each row; refuse a large one.

    Raise DataError naming the first row (as the item of a bulk call at its index) that would
    exceed the server's ``max_allowed_packet`` in a statement of its own: the server would
    refuse it and drop the connection, with an error a caller cannot tell from an outage.
    None elsewhere, and for values only Django knows how to write (then the rows are not
    measured).
    """
    connection = connections[using]
    if connection.vendor != "mysql" or not rows:
        return None
    fields = _fields(type(rows[0])._meta)
    like = _columns_like(fields, template) if template is not None else None
    columns = like or _columns(fields, rows)
    if columns is None or _expression_in(columns, rows):
        return None
    per_column = _prepared(rows, connection, columns)
    if per_column is None:
        return None
    # Each row's values: the shared ones (the same in every row, bounded once) and its own.
    shared: list[Any] = []
    varying: list[list[Any]] = []
    for (_, value), values in zip(columns, per_column, strict=True):
        if value is _VARIES:
            varying.append(values)
        else:
            shared.append(values[0])
    shared_bound = size_bound(shared)
    room = packet_limit(connection) - SQL_ALLOWANCE
    sizes: list[int] = []
    owns = zip(*varying, strict=True) if varying else [()] * len(rows)
    for index, own in enumerate(owns):
        own_bound = size_bound(own)
        bound = None if shared_bound is None or own_bound is None else shared_bound + own_bound
        if bound is None or bound > room:
            what = f"Item {index} of the bulk call"
            bound = checked_size(connection, [*shared, *own], what, bound)
        sizes.append(bound)
    return Measured(columns, per_column, sizes)


def _spans(sizes: list[int], most_rows: int, budget: int) -> Iterator[tuple[int, int]]:
    """Split rows of ``sizes`` into runs of at most ``most_rows`` rows and ``budget`` bytes.

    A row larger than ``budget`` is a run of its own.
    """
    start = 0
    while start < len(sizes):
        stop, total = start + 1, sizes[start]
        while stop < len(sizes) and stop - start < most_rows and total + sizes[stop] <= budget:
            total += sizes[stop]
            stop += 1
        yield start, stop
        start = stop


def _fields(meta: Options[Any]) -> list[Field[Any, Any]]:
    return [f for f in meta.local_concrete_fields if f is not meta.auto_field]


def _rows_per_statement(
    connection: BaseDatabaseWrapper, fields: list[Field[Any, Any]], rows: Sequence[Task]
) -> int:
    """The most rows one statement can insert: the database's limit on its parameters."""
    if connection.vendor == "sqlite":
        import sqlite3

        # Django assumes SQLite's old default of 999 parameters (33 rows of a task); the
        # library's own limit is read where Python can (3.11+): 32,766 by default since 3.32.
        which = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", None)
        connection.ensure_connection()
        getlimit = getattr(connection.connection, "getlimit", None)
        if which is not None and getlimit is not None:
            return max(1, int(getlimit(which)) // len(fields))
    return int(connection.ops.bulk_batch_size(fields, rows))


def _columns_like(fields: list[Field[Any, Any]], template: Task) -> Columns | None:
    """The columns of rows like ``template``; None where each row's value needs computing."""
    if any(getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False) for f in fields):
        return None
    columns: Columns = []
    for field in fields:
        if field.attname in _VARYING_LIKE:
            columns.append((field, _VARIES))
            continue
        value = getattr(template, field.attname)
        if hasattr(value, "resolve_expression"):
            return None
        columns.append((field, value))
    return columns


def _columns(fields: list[Field[Any, Any]], rows: Sequence[Task]) -> Columns | None:
    """Each column with its value if every row has it, else ``_VARIES``.

    None when a shared value is an expression, which only Django knows how to write.
    """
    columns: Columns = []
    for field in fields:
        values = _values(field, rows)
        # One object in every row (the rows of a bulk call share their options' objects). Not
        # equality: 1 == True == 1.0, which a JSON column tells apart.
        if len(set(map(id, values))) == 1 or _all_empty(values):
            if hasattr(values[0], "resolve_expression"):
                return None
            columns.append((field, values[0]))
        else:
            columns.append((field, _VARIES))
    return columns


def _expression_in(columns: Columns, rows: Sequence[Task]) -> bool:
    """Whether a row's own value of a varying column is an expression."""
    return any(
        hasattr(value, "resolve_expression")
        for field, shared in columns
        if shared is _VARIES
        for value in _values(field, rows)
    )


def _insert_values(
    rows: Sequence[Task],
    using: str,
    connection: BaseDatabaseWrapper,
    columns: Columns,
    per_column: list[list[Any]] | None = None,
) -> None:
    """One ``INSERT … VALUES (…), (…) RETURNING id``, each shared value prepared once.

    ``per_column``: the values already prepared (``_prepared()``).
    """
    if per_column is None:
        per_column = _prepared(rows, connection, columns)
        if per_column is None:
            return _bulk_create(rows, using)
    meta = type(rows[0])._meta
    quote = connection.ops.quote_name
    names = [quote(field.column) for field, _ in columns]
    row_sql = f"({', '.join(['%s'] * len(names))})"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(names)}) "
        f"VALUES {', '.join([row_sql] * len(rows))} RETURNING {quote(meta.pk.column)}"
    )
    params = [value for values in zip(*per_column, strict=True) for value in values]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [found[0] for found in cursor.fetchall()]
    _set_ids(rows, ids, using)


def _prepared(
    rows: Sequence[Task], connection: BaseDatabaseWrapper, columns: Columns
) -> list[list[Any]] | None:
    """Each column's values as the driver takes them, a value per row, each shared one prepared
    once; None if a column is written with SQL of its own (only Django knows how)."""
    per_column: list[list[Any]] = []
    for field, shared in columns:
        if hasattr(field, "get_placeholder"):
            return None
        if shared is not _VARIES:
            per_column.append([field.get_db_prep_save(shared, connection)] * len(rows))
        else:
            prep = field.get_db_prep_save
            per_column.append([prep(value, connection) for value in _values(field, rows)])
    return per_column


@dataclass(frozen=True)
class _JsonStatement:
    """``INSERT … SELECT`` of the shared values and of the rows' others from a JSON document."""

    sql: str
    #: The shared values, prepared: the statement's parameters before the document.
    scalars: list[Any]
    #: The varying columns' fields, in the order of each row's array in the document.
    varying: list[Field[Any, Any]]
    is_json: list[bool]


def _json_statement(
    meta: Options[Any], connection: BaseDatabaseWrapper, columns: Columns
) -> _JsonStatement:
    quote = connection.ops.quote_name
    names: list[str] = []
    selected: list[str] = []
    scalars: list[Any] = []
    varying: list[Field[Any, Any]] = []
    is_json: list[bool] = []
    for field, shared in columns:
        db_type = field.db_type(connection)
        names.append(quote(field.column))
        if shared is not _VARIES:
            selected.append(f"%s::{db_type}")
            scalars.append(field.get_db_prep_save(shared, connection))
            continue
        index = len(varying)
        json_column = field.get_internal_type() == "JSONField"
        selected.append(
            f"NULLIF(r.v -> {index}, 'null'::jsonb)"
            if json_column
            else f"(r.v ->> {index})::{db_type}"
        )
        varying.append(field)
        is_json.append(json_column)
    if varying:
        # Each row's differing values as one JSON array, all rows in one document.
        source = "jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS r(v, n) ORDER BY r.n"
    else:
        source = "generate_series(1, %s)"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(names)}) "
        f"SELECT {', '.join(selected)} FROM {source} RETURNING {quote(meta.pk.column)}"
    )
    return _JsonStatement(sql, scalars, varying, is_json)


def _insert_from_json(
    rows: Sequence[Task], using: str, connection: BaseDatabaseWrapper, statement: _JsonStatement
) -> bool:
    """Insert ``rows`` with ``statement``; False (nothing written) if a value is not JSON."""
    if statement.varying:
        encoded: list[list[Any]] = []
        for field, is_json in zip(statement.varying, statement.is_json, strict=True):
            values = _json_values(_values(field, rows), is_json)
            if values is None:
                return False
            encoded.append(values)
        try:
            document = json.dumps([list(values) for values in zip(*encoded, strict=True)])
        except (TypeError, ValueError):  # a value JSON cannot hold: Django knows how to write it
            return False
        if len(document) > _DOCUMENT_BUDGET and len(rows) > 1:
            # Each part's values are JSON as the whole's were: every part is written.
            step = -(-len(rows) // -(-len(document) // _DOCUMENT_BUDGET))
            del document  # not kept while the parts are encoded and sent
            for start in range(0, len(rows), step):
                _insert_from_json(rows[start : start + step], using, connection, statement)
            return True
        params = [*statement.scalars, document]
    else:
        params = [*statement.scalars, len(rows)]
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        ids = [found[0] for found in cursor.fetchall()]
    _set_ids(rows, ids, using)
    return True


def _set_ids(rows: Sequence[Task], ids: list[Any], using: str) -> None:
    if len(ids) != len(rows):  # pragma: no cover - an INSERT writes every row or none
        raise RuntimeError(f"inserted {len(ids)} rows of {len(rows)}")
    for row, pk in zip(rows, ids, strict=True):
        row.pk = pk
        row._state.adding = False
        row._state.db = using


def _all_empty(values: list[Any]) -> bool:
    """Whether every value is an empty list, or every one an empty dict (each row its own)."""
    kind = type(values[0])
    return kind in (list, dict) and all(type(value) is kind and not value for value in values)


def _json_values(values: list[Any], is_json: bool) -> list[Any] | None:
    """Return ``values`` as JSON values PostgreSQL reads back exactly, or None if it cannot.

    A JSON column's values are JSON already (the enqueue path checked them); text, integers
    and ``None`` are JSON too; datetimes go as ISO 8601 with their offset.
    """
    if is_json:
        return values
    encoded: list[Any] = []
    for value in values:
        kind = type(value)
        if kind is str or kind is int or value is None:
            encoded.append(value)
        elif kind is datetime:
            encoded.append(value.isoformat())
        else:
            return None
    return encoded


def _bulk_create(rows: Sequence[Task], using: str) -> None:
    # Values only Django knows how to write (an expression, a decimal): its own bulk insert.
    type(rows[0]).objects.using(using).bulk_create(rows)


def _values(field: Field[Any, Any], rows: Sequence[Task]) -> list[Any]:
    """Return the value of ``field`` in each row, as ``save()`` would write it."""
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return [field.pre_save(row, True) for row in rows]
    return list(map(attrgetter(field.attname), rows))
