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
are saved one by one (in the caller's transaction). Values only Django knows how to write (an
expression) fall back to ``bulk_create()``. Model signals (``pre_save``, ``post_save``) are
not sent, as with ``bulk_create()``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from django.db import connections

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Field

    from .models import Task


def insert_rows(rows: Sequence[Task], using: str, batch_size: int) -> None:
    """INSERT new ``rows`` in statements of at most ``batch_size`` rows; set their ids."""
    if not rows:
        return
    connection = connections[using]
    if connection.vendor == "postgresql":
        for start in range(0, len(rows), batch_size):
            _insert_from_json(rows[start : start + batch_size], using, connection)
    elif connection.features.can_return_rows_from_bulk_insert:
        meta = type(rows[0])._meta
        fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
        # The database's limit on parameters per statement (SQLite's is 999 or 32,766).
        size = max(1, min(batch_size, connection.ops.bulk_batch_size(fields, rows)))
        for start in range(0, len(rows), size):
            _insert_values(rows[start : start + size], using, connection)
    else:
        for row in rows:
            row.save(using=using, force_insert=True)


def _insert_values(rows: Sequence[Task], using: str, connection: BaseDatabaseWrapper) -> None:
    """One ``INSERT … VALUES (…), (…) RETURNING id``, each shared value prepared once."""
    meta = type(rows[0])._meta
    quote = connection.ops.quote_name
    columns: list[str] = []
    per_column: list[list[Any]] = []
    for field in meta.local_concrete_fields:
        if field is meta.auto_field:
            continue
        values = _values(field, rows)
        constant = len(set(map(id, values))) == 1 or _all_empty(values)
        if hasattr(field, "get_placeholder") or any(
            hasattr(value, "resolve_expression") for value in (values[:1] if constant else values)
        ):
            return _bulk_create(rows, using)
        columns.append(quote(field.column))
        if constant:
            per_column.append([field.get_db_prep_save(values[0], connection)] * len(rows))
        else:
            per_column.append([field.get_db_prep_save(value, connection) for value in values])
    row_sql = f"({', '.join(['%s'] * len(columns))})"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(columns)}) "
        f"VALUES {', '.join([row_sql] * len(rows))} RETURNING {quote(meta.pk.column)}"
    )
    params = [value for values in zip(*per_column, strict=True) for value in values]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [found[0] for found in cursor.fetchall()]
    _set_ids(rows, ids, using)


def _insert_from_json(rows: Sequence[Task], using: str, connection: BaseDatabaseWrapper) -> None:
    model = type(rows[0])
    meta = model._meta
    quote = connection.ops.quote_name
    columns: list[str] = []
    selected: list[str] = []
    scalars: list[Any] = []
    varying: list[list[Any]] = []
    for field in meta.local_concrete_fields:
        if field is meta.auto_field:
            continue
        values = _values(field, rows)
        # One object in every row (the rows of a bulk call share their options' objects). Not
        # equality: 1 == True == 1.0, which a JSON column tells apart.
        constant = len(set(map(id, values))) == 1 or _all_empty(values)
        db_type = field.db_type(connection)
        column = quote(field.column)
        if constant:
            if hasattr(values[0], "resolve_expression"):
                return _bulk_create(rows, using)
            columns.append(column)
            selected.append(f"%s::{db_type}")
            scalars.append(field.get_db_prep_save(values[0], connection))
            continue
        is_json = field.get_internal_type() == "JSONField"
        encoded = _json_values(values, is_json)
        if encoded is None:
            return _bulk_create(rows, using)
        columns.append(column)
        index = len(varying)
        selected.append(
            f"NULLIF(r.v -> {index}, 'null'::jsonb)" if is_json else f"(r.v ->> {index})::{db_type}"
        )
        varying.append(encoded)
    if varying:
        # Each row's differing values as one JSON array, all rows in one document.
        source = "jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS r(v, n) ORDER BY r.n"
        try:
            document = json.dumps([list(values) for values in zip(*varying, strict=True)])
        except (TypeError, ValueError):  # a value JSON cannot hold: Django knows how to write it
            return _bulk_create(rows, using)
        params = [*scalars, document]
    else:
        source = "generate_series(1, %s)"
        params = [*scalars, len(rows)]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(columns)}) "
        f"SELECT {', '.join(selected)} FROM {source} RETURNING {quote(meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [found[0] for found in cursor.fetchall()]
    _set_ids(rows, ids, using)


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
