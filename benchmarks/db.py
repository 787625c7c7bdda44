"""Database chores of the benchmarks: create, migrate, empty, fill and describe the database."""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.core.management import call_command
from django.core.management.color import no_style
from django.db import connection
from django.db.models import Model

from background_tasks.models import CompletedTask, Task, Worker
from background_tasks.serialization import encode_params, params_hash

from .tasks import NOOP_NAME, noop

BATCH = 5_000
# Rows of one INSERT ... SELECT of ``insert_series``: a transaction of a bounded size.
SERIES_CHUNK = 100_000
QUEUE_TABLES: tuple[type[Model], ...] = (Task, CompletedTask, Worker)


def ensure_database() -> None:
    """Create the bench database on PostgreSQL or MySQL when it does not exist yet."""
    name = connection.settings_dict["NAME"]
    quoted = connection.ops.quote_name(name)
    if connection.vendor == "postgresql":
        with connection._nodb_cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {quoted}")
    elif connection.vendor == "mysql":
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS {quoted} CHARACTER SET utf8mb4")


def migrate() -> None:
    call_command("migrate", verbosity=0, interactive=False)


def empty(models: Iterable[type[Model]] = QUEUE_TABLES) -> None:
    """Empty tables the way ``manage.py flush`` does (TRUNCATE where the database has it)."""
    tables = [model._meta.db_table for model in models]
    statements = connection.ops.sql_flush(no_style(), tables, reset_sequences=True)
    connection.ops.execute_sql_flush(statements)


def analyze(models: Iterable[type[Model]] = QUEUE_TABLES) -> None:
    """Refresh planner statistics, as autovacuum (PostgreSQL) or InnoDB's auto-recalc would soon.

    SQLite is left alone: it has no statistics unless someone runs ANALYZE, and most
    deployments never do, so its planner's default guesses are what to measure.
    """
    tables = [connection.ops.quote_name(model._meta.db_table) for model in models]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {', '.join(tables)}")
        elif connection.vendor == "mysql":
            cursor.execute(f"ANALYZE TABLE {', '.join(tables)}")
            cursor.fetchall()


def noop_task_rows(
    count: int,
    *,
    run_at: datetime,
    priority: int = 0,
    queue: str = "default",
    spread: timedelta | None = None,
) -> Iterable[Task]:
    """Yield unsaved Task rows for the no-op task, as ``noop()`` would have enqueued them."""
    params = encode_params(NOOP_NAME, noop.func, (), {})
    task_hash = params_hash(NOOP_NAME, params)
    step = (spread or timedelta(0)) / max(count, 1)
    for i in range(count):
        at = run_at + step * i
        yield Task(
            task_name=NOOP_NAME,
            params=params,
            task_hash=task_hash,
            queue=queue,
            priority=priority,
            run_at=at,
            scheduled_at=at,
            created_at=at,
        )


def completed_rows(count: int, *, finished_before: datetime) -> Iterable[CompletedTask]:
    """Yield unsaved CompletedTask rows: a history of succeeded no-op tasks, one a second."""
    params = encode_params(NOOP_NAME, noop.func, (), {})
    task_hash = params_hash(NOOP_NAME, params)
    for i in range(count):
        finished = finished_before - timedelta(seconds=count - i)
        yield CompletedTask(
            task_id=i + 1,
            task_name=NOOP_NAME,
            params=params,
            task_hash=task_hash,
            status=CompletedTask.Status.SUCCEEDED,
            worker="bench:history",
            attempts=1,
            run_at=finished,
            created_at=finished,
            started_at=finished,
            finished_at=finished,
        )


def insert(model: type[Model], rows: Iterable[Any]) -> int:
    """Insert ``rows`` in batches without building them all at once; return how many."""
    total = 0
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            model.objects.bulk_create(batch)  # type: ignore[attr-defined]
            total += len(batch)
            batch = []
    if batch:
        model.objects.bulk_create(batch)  # type: ignore[attr-defined]
        total += len(batch)
    return total


def insert_series(
    model: type[Model],
    first: Model,
    count: int,
    *,
    step: timedelta,
    moving: Sequence[str],
    counting: Sequence[str] = (),
) -> int:
    """Insert ``count`` rows: ``first``, then ``count - 1`` copies the database makes of it.

    The copy number ``i`` (1, 2, ...) has each datetime field named in ``moving`` ``i * step``
    later than ``first``'s and each integer field named in ``counting`` ``i`` more. The copies
    are made by ``INSERT ... SELECT`` over a series of numbers, ``SERIES_CHUNK`` rows per
    statement, so a million rows take seconds instead of the minutes that building them as
    models in Python takes. Return how many rows were inserted.
    """
    model.objects.bulk_create([first])  # type: ignore[attr-defined]
    # Nothing else writes to the bench tables meanwhile: the newest row is the one just saved.
    template = model.objects.order_by("-pk").values_list("pk", flat=True)[0]  # type: ignore[attr-defined]
    qn = connection.ops.quote_name
    micros = round(step / timedelta(microseconds=1))
    moving_columns = {model._meta.get_field(name).column for name in moving}
    counting_columns = {model._meta.get_field(name).column for name in counting}
    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        column = f"tpl.{qn(field.column)}"
        if field.column in moving_columns:
            column = _later(column, micros)
        elif field.column in counting_columns:
            column = f"{column} + g.i"
        columns.append(qn(field.column))
        values.append(column)
    table = qn(model._meta.db_table)
    head = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {table} tpl"
    where = f"WHERE tpl.{qn(model._meta.pk.column)} = %s"
    with connection.cursor() as cursor:
        for low in range(1, count, SERIES_CHUNK):
            high = min(low + SERIES_CHUNK, count) - 1
            cursor.execute(f"{head} CROSS JOIN {_series(cursor, low, high)} {where}", [template])
    return count


def _series(cursor: Any, low: int, high: int) -> str:
    """A derived table ``g`` with one column ``i``: the whole numbers ``low`` to ``high``."""
    if connection.vendor == "postgresql":
        return f"generate_series({low:d}, {high:d}) AS g(i)"
    if connection.vendor == "mysql":
        # Both bound a recursive CTE's depth (MariaDB: 1,000 by default, MySQL: 1,000).
        name = (
            "max_recursive_iterations" if connection.mysql_is_mariadb else "cte_max_recursion_depth"
        )
        cursor.execute(f"SET SESSION {name} = %s", [high - low + 2])
    numbers = f"SELECT {low:d} UNION ALL SELECT i + 1 FROM n WHERE i < {high:d}"
    return f"(WITH RECURSIVE n(i) AS ({numbers}) SELECT i FROM n) g"


def _later(column: str, micros: int) -> str:
    """SQL for ``column`` (a datetime) plus ``g.i * micros`` microseconds."""
    if connection.vendor == "postgresql":
        return f"{column} + g.i * interval '{micros:d} microseconds'"
    if connection.vendor == "mysql":
        return f"{column} + INTERVAL g.i * {micros:d} MICROSECOND"
    # SQLite stores text such as '2026-11-30 12:00:00.123456'; strftime keeps milliseconds,
    # which Django reads back as well and which still sorts in time order.
    return f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', {column}, (g.i * {micros:d} / 1e6) || ' seconds')"


def server_description() -> list[tuple[str, str]]:
    """Describe the database server and the settings that weigh on write speed."""
    vendor = connection.vendor
    where = connection.settings_dict.get("HOST") or "local socket"
    if vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                cursor.fetchone()[0], "?"
            )
        return [
            (
                "Database",
                f"SQLite {sqlite3.sqlite_version} (file {connection.settings_dict['NAME']})",
            ),
            ("DB settings", f"journal_mode={journal} synchronous={synchronous}"),
        ]
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("SHOW server_version")
            version = f"PostgreSQL {cursor.fetchone()[0]}"
            names = ["synchronous_commit", "fsync", "shared_buffers", "work_mem"]
            values = []
            for setting in names:
                cursor.execute(f"SHOW {setting}")
                values.append(f"{setting}={cursor.fetchone()[0]}")
        else:
            cursor.execute("SELECT VERSION()")
            raw = cursor.fetchone()[0]
            version = f"{'MariaDB' if 'mariadb' in raw.lower() else 'MySQL'} {raw}"
            names = [
                "innodb_flush_log_at_trx_commit",
                "innodb_buffer_pool_size",
                "transaction_isolation",
                "tx_isolation",
            ]
            values = []
            for setting in names:
                cursor.execute("SHOW VARIABLES LIKE %s", [setting])
                row = cursor.fetchone()
                if row is not None:
                    values.append(f"{row[0]}={row[1]}")
    return [("Database", f"{version} at {where}"), ("DB settings", " ".join(values))]


def latency_probe(commits: int = 100, connects: int = 20) -> list[tuple[str, str]]:
    """Measure what bounds a worker on this machine: a durable commit and a new connection."""
    table = connection.ops.quote_name("bench_commit_probe")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, v integer)")
    commit_times = []
    try:
        with connection.cursor() as cursor:
            for i in range(commits):
                start = time.perf_counter()
                cursor.execute(f"INSERT INTO {table} (id, v) VALUES (%s, 1)", [i])
                commit_times.append(time.perf_counter() - start)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {table}")
    connect_times = []
    for _ in range(connects):
        connection.close()
        start = time.perf_counter()
        connection.ensure_connection()
        connect_times.append(time.perf_counter() - start)
    return [
        (
            "Commit latency",
            f"median {statistics.median(commit_times) * 1000:.2f} ms "
            f"({commits} single-row INSERTs, each its own transaction)",
        ),
        (
            "Connect latency",
            f"median {statistics.median(connect_times) * 1000:.2f} ms "
            f"({connects} Django connection opens)",
        ),
    ]
