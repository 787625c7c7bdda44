"""Claiming ready tasks: the one place with SQL that differs per database vendor.

Each claim is one short transaction that marks up to ``limit`` ready rows as held by the
worker (``locked_by``, ``locked_at``) and counts the attempt; task bodies run after it commits.

- PostgreSQL: one statement, a CTE with ``FOR UPDATE SKIP LOCKED`` feeding an ``UPDATE``
  (the CTE keeps the planner from updating more rows than ``LIMIT``).
- MySQL 8 / MariaDB 10.6+: ``SELECT ... FOR UPDATE SKIP LOCKED`` then ``UPDATE ... WHERE id IN``
  in one transaction, retried on deadlock (1213) and lock wait timeout (1205).
- SQLite: no row locks and one writer at a time, so one ``UPDATE ... WHERE id IN (SELECT ...
  LIMIT n) RETURNING id`` statement in autocommit mode: a write statement takes the database
  write lock before it reads, waiting up to the busy timeout, so two workers can never pick
  the same row. ``select_for_update`` is deliberately not used there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import OperationalError, connections, router, transaction
from django.utils import timezone

from .conf import app_settings
from .isolation import ATTEMPTS_CEILING, load_held

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from .models import Task

MYSQL_RETRYABLE_ERRORS = (1213, 1205)  # deadlock, lock wait timeout
MYSQL_RETRIES = 5


def order_by_sql(descending_priority: bool) -> str:
    """Return the ORDER BY that picks the next tasks: priority, then run_at, then id."""
    return f"priority {'DESC' if descending_priority else 'ASC'}, run_at ASC, id ASC"


#: Counts the attempt, except at the ceiling: one row at the column's maximum must not make
#: every claim statement fail with an out-of-range error (the worker then fails that row).
COUNT_ATTEMPT_SQL = (
    f"attempts = CASE WHEN attempts < {ATTEMPTS_CEILING} THEN attempts + 1 ELSE attempts END"
)


def ready_where_sql(queues: Sequence[str]) -> tuple[str, list[Any]]:
    """Return the WHERE clause (and its params, minus ``now``) selecting ready rows."""
    sql = "locked_by IS NULL AND run_at <= %s"
    if queues:
        sql += f" AND queue IN ({', '.join(['%s'] * len(queues))})"
    return sql, list(queues)


def postgresql_claim_sql(table: str, queues: Sequence[str], descending: bool) -> str:
    where, _ = ready_where_sql(queues)
    return (
        f"WITH claimable AS (SELECT id FROM {table} WHERE {where} "
        f"ORDER BY {order_by_sql(descending)} LIMIT %s FOR UPDATE SKIP LOCKED) "
        f"UPDATE {table} SET locked_by = %s, locked_at = %s, {COUNT_ATTEMPT_SQL} "
        f"FROM claimable WHERE {table}.id = claimable.id RETURNING {table}.id"
    )


def sqlite_claim_sql(table: str, queues: Sequence[str], descending: bool) -> str:
    where, _ = ready_where_sql(queues)
    # The unary + keeps SQLite's planner (which has no statistics unless someone runs ANALYZE)
    # from choosing the locked_by index, reading every unlocked row and sorting the ready ones;
    # it then walks the claim index in ORDER BY order and stops after LIMIT.
    where = where.replace("locked_by IS NULL", "+locked_by IS NULL", 1)
    return (
        f"UPDATE {table} SET locked_by = %s, locked_at = %s, {COUNT_ATTEMPT_SQL} "
        f"WHERE locked_by IS NULL AND id IN (SELECT id FROM {table} WHERE {where} "
        f"ORDER BY {order_by_sql(descending)} LIMIT %s) RETURNING id"
    )


def claim_tasks(
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    *,
    now: datetime | None = None,
    using: str | None = None,
) -> list[Task]:
    """Mark up to ``limit`` ready tasks as held by ``worker_id`` and return them in run order.

    A claimed row the database cannot load is quarantined and left out (see isolation.py), and
    its slot claimed again: a bad row never makes the queue look empty.
    """
    from .models import Task

    using = using or router.db_for_write(Task)
    now = now or timezone.now()
    order = "-priority" if app_settings.priority_descending else "priority"
    claimed: list[Task] = []
    while limit > 0:
        ids = _claim_ids(using, worker_id, queues, limit, now)
        if not ids:
            break
        loaded = load_held(ids, worker_id, using, (order, "run_at", "id"))
        claimed.extend(loaded)
        if len(loaded) == len(ids):
            break
        # Rows set aside are no longer claimable, so this loop ends.
        limit -= len(loaded)
    return claimed


def _claim_ids(
    using: str, worker_id: str, queues: Sequence[str], limit: int, now: datetime
) -> list[int]:
    connection = connections[using]
    descending = app_settings.priority_descending
    if connection.vendor == "postgresql":
        ids = _claim_postgresql(connection, worker_id, queues, limit, now, descending)
    elif connection.vendor == "mysql":
        ids = _claim_mysql(using, worker_id, queues, limit, now, descending)
    elif connection.vendor == "sqlite":
        ids = _claim_sqlite(connection, worker_id, queues, limit, now, descending)
    else:
        ids = _claim_generic(using, worker_id, queues, limit, now, descending)
    return ids


def _table(connection: BaseDatabaseWrapper) -> str:
    from .models import Task

    return connection.ops.quote_name(Task._meta.db_table)


def _claim_postgresql(
    connection: BaseDatabaseWrapper,
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    now: datetime,
    descending: bool,
) -> list[int]:
    sql = postgresql_claim_sql(_table(connection), queues, descending)
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, *queues, limit, worker_id, now])
        return [row[0] for row in cursor.fetchall()]


def _claim_sqlite(
    connection: BaseDatabaseWrapper,
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    now: datetime,
    descending: bool,
) -> list[int]:
    sql = sqlite_claim_sql(_table(connection), queues, descending)
    stamp = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(sql, [worker_id, stamp, stamp, *queues, limit])
        return [row[0] for row in cursor.fetchall()]


def _claim_mysql(
    using: str, worker_id: str, queues: Sequence[str], limit: int, now: datetime, descending: bool
) -> list[int]:
    for attempt in range(MYSQL_RETRIES):
        try:
            return _claim_generic(using, worker_id, queues, limit, now, descending)
        except OperationalError as exc:
            code = exc.args[0] if exc.args else None
            if code not in MYSQL_RETRYABLE_ERRORS or attempt == MYSQL_RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))  # brief pause before retrying a deadlocked claim
    return []


def _claim_generic(
    using: str, worker_id: str, queues: Sequence[str], limit: int, now: datetime, descending: bool
) -> list[int]:
    """Claim through the ORM: SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE, in one transaction."""
    from django.db.models import Case, F, PositiveIntegerField, When

    from .models import Task

    order = "-priority" if descending else "priority"
    connection = connections[using]
    if connection.vendor == "mysql" and not connection.in_atomic_block:
        # Under REPEATABLE READ a locking read keeps locks on every row it examines, matching or
        # not (far-future rows, say); READ COMMITTED releases those at once. Applies to the next
        # transaction only.
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    with transaction.atomic(using=using):
        ready = Task.objects.using(using).due(now).in_queues(list(queues))
        ids = list(
            ready.select_for_update(skip_locked=True)
            .order_by(order, "run_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        if ids:
            Task.objects.using(using).filter(id__in=ids).update(
                locked_by=worker_id,
                locked_at=now,
                attempts=Case(
                    When(attempts__lt=ATTEMPTS_CEILING, then=F("attempts") + 1),
                    default=F("attempts"),
                    output_field=PositiveIntegerField(),
                ),
            )
    return ids
