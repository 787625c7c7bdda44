"""Claiming ready tasks: the one place with SQL that differs per database vendor.

Each claim is one short transaction that marks up to ``limit`` ready rows as held by the
worker (``locked_by``, ``locked_at``) and counts the attempt; task bodies run after it commits.
A claim first finds the best priority that has a ready row (a loose index scan, see
:func:`top_level_cte_sql`) and reads that priority alone, so its cost does not grow with the
rows scheduled ahead.

- PostgreSQL: one statement, CTEs with ``FOR UPDATE SKIP LOCKED`` feeding an
  ``UPDATE … RETURNING`` of the claimed rows (the CTE keeps the planner from updating more rows
  than ``LIMIT``).
- MySQL 8 / MariaDB 10.6+: a plain read of the priority, ``SELECT ... FOR UPDATE SKIP LOCKED``
  (of every column: no second read) then ``UPDATE ... WHERE id IN`` in one transaction, retried
  on deadlock (1213) and lock wait timeout (1205).
- SQLite: no row locks and one writer at a time, so one ``UPDATE ... WHERE id IN (SELECT ...
  LIMIT n) RETURNING`` statement in autocommit mode: a write statement takes the database
  write lock before it reads, waiting up to the busy timeout, so two workers can never pick
  the same row. ``select_for_update`` is deliberately not used there.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from django.db import connections, router
from django.utils import timezone

from . import claimed_rows
from .conf import app_settings
from .deadlocks import retry_deadlocks
from .isolation import ATTEMPTS_CEILING, is_database_fault, keep_complete, load_held
from .short_transactions import short_transaction

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from .models import Task


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


def _sqlite_ready(where: str) -> str:
    # The unary + keeps SQLite's planner (which has no statistics unless someone runs ANALYZE)
    # from choosing the locked_by index, reading every unlocked row and sorting the ready ones;
    # it then walks a claim index in ORDER BY order and stops after LIMIT.
    return where.replace("locked_by IS NULL", "+locked_by IS NULL", 1)


def top_level_cte_sql(
    table: str, queues: Sequence[str], descending: bool, vendor: str, below: bool = False
) -> str:
    """Return the CTEs ``levels`` and ``top``: the best priority that has a claimable row.

    Params: the priority to stay beyond (only when ``below``), now, then the queues.

    Why: the claim indexes are ordered (priority, run_at, id), so a claim that walked them in
    ORDER BY order would step over every scheduled row of a better priority before reaching a
    ready one. Instead the distinct priorities are enumerated with one index seek each (a
    "loose index scan", as a recursive CTE), each is checked for a ready row with one more seek
    (run_at <= now is a range inside one priority), and the claim then reads that priority
    alone. The cost grows with the number of distinct priorities, not with the scheduled rows.
    """
    beyond, order = ("<", "DESC") if descending else (">", "ASC")
    where, _ = ready_where_sql(queues)
    if vendor == "sqlite":
        where = _sqlite_ready(where)
    # A scalar subquery with ORDER BY … LIMIT 1, not MAX(): MariaDB reads the whole index for
    # an aggregate in a recursive CTE.
    bound = f" WHERE priority {beyond} %s" if below else ""
    anchor = f"SELECT (SELECT priority FROM {table}{bound} ORDER BY priority {order} LIMIT 1)"
    # A scalar subquery with LIMIT, not EXISTS: planners turn an EXISTS into a semi-join that
    # reads every ready row, where this stays one seek per priority. On PostgreSQL it locks the
    # row it finds, skipping locked ones, so that a priority whose ready rows other transactions
    # hold is passed over (that row is the first the claim then takes, under its own lock), and
    # ``top`` has no ORDER BY: the recursive CTE yields the priorities best first and is read
    # only as far as the first claimable one, so no row of a worse priority gets locked. There
    # the check reads in run order (ORDER BY run_at, id: the claim index's order within a
    # priority) so that the row it locks is the claim's first, and so that the planner keeps
    # walking the index: without it PostgreSQL may pick a sequential scan once the table holds
    # many dead rows, which reads the whole heap (production.md: keep autovacuum on). SQLite
    # needs neither, and would sort for it when several queues are claimed.
    lock, top_order = (" FOR UPDATE SKIP LOCKED", "") if vendor == "postgresql" else ("", order)
    in_run_order = "ORDER BY run_at ASC, id ASC " if vendor == "postgresql" else ""
    return (
        f"levels (p) AS ({anchor} "
        f"UNION ALL SELECT (SELECT nxt.priority FROM {table} nxt "
        f"WHERE nxt.priority {beyond} levels.p ORDER BY nxt.priority {order} LIMIT 1) "
        f"FROM levels WHERE levels.p IS NOT NULL), "
        f"top (p) AS (SELECT p FROM levels WHERE p IS NOT NULL AND "
        f"(SELECT 1 FROM {table} WHERE priority = levels.p AND {where} "
        f"{in_run_order}LIMIT 1{lock}) "
        f"IS NOT NULL{' ORDER BY p ' + top_order if top_order else ''} LIMIT 1)"
    )


def candidates_sql(
    table: str,
    queues: Sequence[str],
    lock: str,
    sqlite: bool,
    priority: str = "(SELECT p FROM top)",
) -> str:
    """Return the SELECT of the ids to claim at one priority, in run order (see claim_params).

    With several queues, each queue's rows are read in order through the queue index (LIMIT
    rows each) and the union, at most queues x LIMIT rows, is merged: a merge of that many rows
    instead of a sort of every ready row of those queues. On PostgreSQL each branch locks its
    rows, so a claim may hold up to queues x LIMIT row locks for its few milliseconds.
    """
    where, _ = ready_where_sql(queues[:1])
    if sqlite:
        where = _sqlite_ready(where)
    if len(queues) <= 1:
        return (
            f"SELECT id FROM {table} WHERE {where} AND priority = {priority} "
            f"ORDER BY run_at ASC, id ASC LIMIT %s{lock}"
        )
    branches = " UNION ALL ".join(
        f"SELECT id, run_at FROM (SELECT id, run_at FROM {table} WHERE {where} "
        f"AND priority = {priority} ORDER BY run_at ASC, id ASC LIMIT %s{lock}) q{i}"
        for i in range(len(queues))
    )
    return f"SELECT id FROM ({branches}) merged ORDER BY run_at ASC, id ASC LIMIT %s"


def candidates_params(now: Any, queues: Sequence[str], limit: int) -> list[Any]:
    """Return the params of :func:`candidates_sql` (after those of the priority, if any)."""
    if len(queues) <= 1:
        return [now, *queues, limit]
    return [*(value for queue in queues for value in (now, queue, limit)), limit]


def postgresql_claim_sql(
    table: str, queues: Sequence[str], descending: bool, returning: str | None = None
) -> str:
    """Return the claim statement; params: :func:`postgresql_claim_params`.

    ``returning``: the columns it returns (default: the ids).
    """
    return (
        f"WITH RECURSIVE {top_level_cte_sql(table, queues, descending, 'postgresql')}, "
        f"claimable AS ({candidates_sql(table, queues, ' FOR UPDATE SKIP LOCKED', False)}) "
        f"UPDATE {table} SET locked_by = %s, locked_at = %s, {COUNT_ATTEMPT_SQL} "
        f"FROM claimable WHERE {table}.id = claimable.id RETURNING {returning or table + '.id'}"
    )


def postgresql_claim_params(
    worker_id: str, queues: Sequence[str], limit: int, now: datetime
) -> list[Any]:
    return [now, *queues, *candidates_params(now, queues, limit), worker_id, now]


def sqlite_claim_sql(
    table: str, queues: Sequence[str], descending: bool, returning: str | None = None
) -> str:
    """Return the claim statement; params: :func:`sqlite_claim_params`.

    ``returning``: the columns it returns (default: the ids).
    """
    return (
        f"UPDATE {table} SET locked_by = %s, locked_at = %s, {COUNT_ATTEMPT_SQL} "
        f"WHERE locked_by IS NULL AND id IN (WITH RECURSIVE "
        f"{top_level_cte_sql(table, queues, descending, 'sqlite')} "
        f"{candidates_sql(table, queues, '', True)}) RETURNING {returning or 'id'}"
    )


def sqlite_claim_params(worker_id: str, queues: Sequence[str], limit: int, stamp: Any) -> list[Any]:
    return [worker_id, stamp, stamp, *queues, *candidates_params(stamp, queues, limit)]


def mysql_level_sql(table: str, descending: bool, below: bool) -> str:
    """Return the plain read of the next priority that has any row.

    Params: (only when ``below``) the priority to go beyond. Returns one row (the priority), or
    none when no priority is left.

    MySQL/MariaDB get the loose index scan one priority per statement, not as a recursive CTE,
    and whether that priority has a ready row is asked by the locking read that follows, with
    the priority as a parameter: MariaDB does not seek an index on a value from an outer query.
    A subquery ``priority = lvl.p AND run_at <= now`` here would read every row of that
    priority (every scheduled row, when the rows scheduled ahead have a better priority than
    the ready ones), where the parameter makes it one range seek. A busy worker mostly does
    without this read: see :func:`_lock_at_last_level`.
    """
    beyond, order = ("<", "DESC") if descending else (">", "ASC")
    bound = f" WHERE priority {beyond} %s" if below else ""
    return f"SELECT priority FROM {table}{bound} ORDER BY priority {order} LIMIT 1"


def mysql_better_sql(
    table: str, descending: bool, passed: int = 0, queues: Sequence[str] = ()
) -> str:
    """Return the subquery asking whether a better priority than its first parameter may have
    a claimable row.

    Returns 1 or NULL (see ``_lock_at_last_level``). With no ``passed`` priorities: is there any
    row of a better priority? With ``passed`` priorities (better ones the last claim found no
    claimable row in): is there a row of a better priority other than those, or a ready row
    in ``queues`` at one of those? Params: the priority, the passed ones; then (with passed
    ones) now, the queues, the passed ones again. Each part is one index range seek per
    priority named, whatever the rows scheduled at them.
    """
    beyond = ">" if descending else "<"
    if not passed:
        return f"(SELECT 1 FROM {table} WHERE priority {beyond} %s LIMIT 1)"
    listed = ", ".join(["%s"] * passed)
    where, _ = ready_where_sql(queues)
    return (
        f"COALESCE((SELECT 1 FROM {table} WHERE priority {beyond} %s "
        f"AND priority NOT IN ({listed}) LIMIT 1), "
        f"(SELECT 1 FROM {table} WHERE {where} AND priority IN ({listed}) LIMIT 1))"
    )


def mysql_better_params(
    level: Any, passed: Sequence[Any], now: Any, queues: Sequence[str]
) -> list[Any]:
    """Return the params of :func:`mysql_better_sql`."""
    if not passed:
        return [level]
    return [level, *passed, now, *queues, *passed]


def claim_tasks(
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    *,
    now: datetime | None = None,
    using: str | None = None,
    shared: bool = False,
) -> list[Task]:
    """Mark up to ``limit`` ready tasks as held by ``worker_id`` and return them in run order.

    A claimed row the database cannot load is quarantined and left out (see isolation.py), and
    its slot claimed again: a bad row never makes the queue look empty.

    ``shared``: the claim is part of the caller's transaction (opened after
    :func:`prepare_transaction`), which it neither commits nor retries: on MySQL a deadlock rolls
    back the whole transaction, so the caller must start again.
    """
    from .models import Task

    using = using or router.db_for_write(Task)
    now = now or claim_stamp()
    order = "-priority" if app_settings.priority_descending else "priority"
    claimed: list[Task] = []
    taken: set[int] = set()
    while limit > 0:
        # One statement claims rows of one priority (see top_level_cte_sql), best first: when
        # it found fewer than asked, the next priority may have more. Claimed rows and rows set
        # aside are no longer claimable, so this loop ends.
        ids, rows = _claim(using, worker_id, queues, limit, now, shared)
        # A reply that could not be read is found again by the claim's stamp (_held_since),
        # which the earlier statements of this claim share: their rows are taken already.
        ids = [pk for pk in ids if pk not in taken]
        if not ids:
            break
        if rows is None:
            # Not returned by the claim, or not loadable as returned: read them by id, one by
            # one if need be, setting aside the rows that cannot be loaded.
            loaded = load_held(ids, worker_id, using, (order, "run_at", "id"))
        else:
            loaded = keep_complete(sorted(rows, key=_run_order), worker_id)
        claimed.extend(loaded)
        taken.update(ids)
        limit -= len(ids) if len(loaded) == len(ids) else len(loaded)
    return claimed


#: How far back a claim stamp may be from the last one and still be moved past it.
_STAMP_WINDOW = timedelta(seconds=1)
_stamp_lock = threading.Lock()
#: The last claim stamp this process gave (see claim_stamp).
_last_stamp: list[datetime] = []


def claim_stamp() -> datetime:
    """Return the time to stamp a new claim with (``locked_at``, and "now" for readiness).

    (holder, locked_at) names one claim (see :func:`_held_since` and ``lifecycle._held``),
    but the threads of a worker claim under one id, and two of them may read the same
    microsecond (or the same tick of a coarse clock): a claim whose reply could not be read
    would then find the other claim's rows as its own, and run them a second time. So a stamp
    that is not after the last one this process gave is moved one microsecond past it. A clock
    set back by more than ``_STAMP_WINDOW`` is followed (claims must not wait for it).
    """
    now = timezone.now()
    with _stamp_lock:
        last = _last_stamp[0] if _last_stamp else None
        if (
            last is not None
            and (last.tzinfo is None) == (now.tzinfo is None)
            and last - _STAMP_WINDOW < now <= last
        ):
            now = last + timedelta(microseconds=1)
        _last_stamp[:] = [now]
    return now


def _run_order(task: Task) -> tuple[Any, ...]:
    """Sort key of claimed tasks; a zero date (None, see ``_row_run_order``) sorts first."""
    priority = -task.priority if app_settings.priority_descending else task.priority
    run_at = task.run_at
    return (priority, run_at is not None, run_at if run_at is not None else 0, task.pk)


def prepare_transaction(using: str) -> None:
    """Prepare the next transaction of this connection for a claim; call it before it begins.

    MySQL/MariaDB: under REPEATABLE READ a locking read keeps locks on every row it examines,
    matching or not (far-future rows, say); READ COMMITTED releases those at once. The setting
    applies to the next transaction only, so a task body's own transactions keep the default.
    Nothing is sent when the connection's own level is READ COMMITTED already (Django's
    default ``isolation_level`` on MySQL).
    """
    connection = connections[using]
    if (
        connection.vendor == "mysql"
        and not connection.in_atomic_block
        and getattr(connection, "isolation_level", None) != "read committed"
    ):
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")


def _claim(
    using: str, worker_id: str, queues: Sequence[str], limit: int, now: datetime, shared: bool
) -> tuple[list[int], list[Task] | None]:
    """Claim; return the ids, and the rows when the claim statement returned them."""
    connection = connections[using]
    descending = app_settings.priority_descending
    if connection.vendor == "postgresql":
        sql = _returning_claim_sql(connection, tuple(queues), descending)
        params = postgresql_claim_params(worker_id, queues, limit, now)
    elif connection.vendor == "sqlite":
        sql = _returning_claim_sql(connection, tuple(queues), descending)
        stamp = connection.ops.adapt_datetimefield_value(now)
        params = sqlite_claim_params(worker_id, queues, limit, stamp)
    elif connection.vendor == "mysql" and not shared:
        return _claim_mysql(using, worker_id, queues, limit, now, descending)
    else:
        return _claim_generic(using, worker_id, queues, limit, now, descending)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        try:
            # psycopg converts values as it fetches: a value it refuses fails here, after the
            # claim has committed.
            raw = cursor.fetchall()
        except Exception as exc:
            if is_database_fault(exc):
                raise
            return _held_since(using, worker_id, now), None
    ids = [row[0] for row in raw]
    try:
        return ids, claimed_rows.build(connection, using, raw)
    except Exception as exc:
        if is_database_fault(exc):
            raise
        return ids, None


#: Claim statements by (database alias, vendor, queues, order): built once, run for every task.
_claim_statements: dict[tuple[str, str, tuple[str, ...], bool], str] = {}


def _returning_claim_sql(
    connection: BaseDatabaseWrapper, queues: tuple[str, ...], descending: bool
) -> str:
    """Return the PostgreSQL or SQLite claim statement returning every column."""
    key = (connection.alias, connection.vendor, queues, descending)
    sql = _claim_statements.get(key)
    if sql is None:
        table = _table(connection)
        if connection.vendor == "postgresql":
            returning = claimed_rows.returning_sql(connection, qualify=True)
            sql = postgresql_claim_sql(table, queues, descending, returning)
        else:
            returning = claimed_rows.returning_sql(connection, qualify=False)
            sql = sqlite_claim_sql(table, queues, descending, returning)
        _claim_statements[key] = sql
    return sql


def _held_since(using: str, worker_id: str, now: datetime) -> list[int]:
    """Find the ids of the rows a claim stamped, when its reply could not be read.

    A worker's claims are stamped apart (:func:`claim_stamp`), even those of two threads at
    the same instant, so (holder, locked_at) names one claim.
    """
    from .models import Task

    held = Task.objects.using(using).filter(locked_by=worker_id, locked_at=now)
    return list(held.values_list("id", flat=True))


def _table(connection: BaseDatabaseWrapper) -> str:
    from .models import Task

    return connection.ops.quote_name(Task._meta.db_table)


def _claim_mysql(
    using: str, worker_id: str, queues: Sequence[str], limit: int, now: datetime, descending: bool
) -> tuple[list[int], list[Task] | None]:
    return retry_deadlocks(lambda: _claim_generic(using, worker_id, queues, limit, now, descending))


def _claim_generic(
    using: str, worker_id: str, queues: Sequence[str], limit: int, now: datetime, descending: bool
) -> tuple[list[int], list[Task] | None]:
    """Claim in one transaction: read the best ready priority, lock rows of it with
    SELECT ... FOR UPDATE SKIP LOCKED (one SELECT per queue), then UPDATE them.

    The locking read returns every column, so the claimed rows need no second read: what the
    UPDATE changes (holder, claim time, attempts) is set on them as it sets it in the table.
    Return the ids and the rows (None if they could not be loaded as read).
    """
    connection = connections[using]
    table = _table(connection)
    returning = claimed_rows.returning_sql(connection, qualify=False)
    prepare_transaction(using)
    # Inside the caller's transaction no savepoint: nothing here can be retried in it anyway.
    with short_transaction(using, savepoint=False), connection.cursor() as cursor:
        found = _lock_best_level(
            cursor, table, queues, limit, now, descending, returning, _last_levels, connection
        )
        picked = sorted(found, key=_row_run_order)[:limit]
        ids = [row[0] for row in picked]
        if ids:
            stamp = connection.ops.adapt_datetimefield_value(now)
            cursor.execute(_mark_held_sql(table, len(ids)), [worker_id, stamp, *ids])
    try:
        tasks = claimed_rows.build(connection, using, picked)
    except Exception as exc:
        if is_database_fault(exc):
            raise
        return ids, None
    for task in tasks:
        task.locked_by, task.locked_at = worker_id, now
        if task.attempts < ATTEMPTS_CEILING:
            task.attempts += 1
    return ids, tasks


@cache
def _mark_held_sql(table: str, count: int) -> str:
    """The MySQL claim's UPDATE of ``count`` locked rows: built once per table and count."""
    return (
        f"UPDATE {table} SET locked_by = %s, locked_at = %s, {COUNT_ATTEMPT_SQL} "
        f"WHERE id IN ({', '.join(['%s'] * count)})"
    )


@cache
def _run_at_position() -> int:
    from .models import Task

    return [f.attname for f in Task._meta.concrete_fields].index("run_at")


def _row_run_order(row: Sequence[Any]) -> tuple[Any, ...]:
    """Sort key of a row read in ``returning_sql`` order: run_at, then id.

    A zero date reads as None on MySQL and MariaDB: such a row sorts first, as the database
    sorts it, and is quarantined once claimed (isolation rules); it must not fail the claim.
    """
    run_at = row[_run_at_position()]
    return (run_at is not None, run_at if run_at is not None else 0, row[0])


#: The priority each connection's last MySQL claim took rows from, with the queues and the order
#: it was for, and the better priorities it found no claimable row in (see
#: :func:`_lock_at_last_level`).
_LastLevel = tuple[tuple[str, ...], bool, Any, tuple[Any, ...]]
_last_levels: weakref.WeakKeyDictionary[Any, _LastLevel] = weakref.WeakKeyDictionary()


def _lock_best_level(
    cursor: Any,
    table: str,
    queues: Sequence[str],
    limit: int,
    now: datetime,
    descending: bool,
    columns: str,
    last_levels: weakref.WeakKeyDictionary[Any, _LastLevel] | None = None,
    connection: Any = None,
) -> list[tuple[Any, ...]]:
    """Lock up to ``limit`` ready rows of the best priority that has unlocked ones.

    A priority whose ready rows other transactions hold (all skipped) is passed over for the
    next one, as the PostgreSQL claim does. With ``last_levels``, the priority the connection's
    last claim took rows from is tried first (:func:`_lock_at_last_level`).
    """
    key = (tuple(queues), descending)
    last = last_levels.get(connection) if last_levels is not None else None
    if last is not None and last[:2] == key:
        found = _lock_at_last_level(
            cursor, table, queues, limit, now, descending, columns, last[2], last[3]
        )
        if found:
            return found
    level: Any = None
    passed: list[Any] = []
    while True:
        below = level is not None
        cursor.execute(mysql_level_sql(table, descending, below), [level] if below else [])
        row = cursor.fetchone()
        if row is None:
            if last_levels is not None:
                last_levels.pop(connection, None)
            return []
        # A priority with no ready row (only scheduled ones, or all held) costs this one more
        # short statement: a range seek that finds nothing.
        level = row[0]
        found, _ = _lock_level(cursor, table, queues, limit, now, columns, level)
        if found:
            if last_levels is not None:
                last_levels[connection] = (*key, level, tuple(passed))
            return found
        passed.append(level)


#: The locking reads by (table, columns, question, queue): built once, run for every claim.
_lock_statements: dict[tuple[str, ...], str] = {}


def _lock_level(
    cursor: Any,
    table: str,
    queues: Sequence[str],
    limit: int,
    now: datetime,
    columns: str,
    level: Any,
    better: str = "",
    better_params: Sequence[Any] = (),
) -> tuple[list[tuple[Any, ...]], bool]:
    """Lock up to ``limit`` ready rows of priority ``level`` in each queue (all when none).

    ``better``: a subquery to ask in the first queue's read (its parameters come first).
    Return the rows, and whether that first read returned rows on which it answered NULL.
    """
    found: list[tuple[Any, ...]] = []
    none_better = False
    # One locking read per queue, merged by the caller: rows beyond the limit stay locked
    # until this short transaction ends, as on PostgreSQL.
    for one in [[queue] for queue in queues] or [[]]:
        key = (table, columns, better, *one)
        sql = _lock_statements.get(key)
        if sql is None:
            sql = candidates_sql(table, one, " FOR UPDATE SKIP LOCKED", False, "%s")
            head = f"SELECT {columns}{', ' + better if better else ''} FROM"
            sql = _lock_statements[key] = sql.replace("SELECT id FROM", head, 1)
        cursor.execute(sql, [*(better_params if better else ()), now, *one, level, limit])
        rows = cursor.fetchall()
        if better:
            none_better = bool(rows) and rows[0][-1] is None
            rows = [row[:-1] for row in rows]
            better = ""
        found.extend(rows)
    return found, none_better


def _lock_at_last_level(
    cursor: Any,
    table: str,
    queues: Sequence[str],
    limit: int,
    now: datetime,
    descending: bool,
    columns: str,
    level: Any,
    passed: Sequence[Any] = (),
) -> list[tuple[Any, ...]]:
    """Lock ready rows of the priority the last claim took rows from, if it is still the best.

    Return no row when it is not known to be: the caller then reads the priorities.

    A busy worker claims from the same priority task after task, so its last priority is
    tried at once, with the question the priority read would answer asked in the same
    statement: is there any row at all of a better priority? If not, and ready rows of this
    one were locked, these are the rows the priority read and the locking read would have
    claimed, in one round trip instead of two. Any row of a better priority (even one
    scheduled for later, or held) sends the claim the long way: one index seek answers the
    question whatever the number of rows, where asking for a ready unlocked one would walk
    over every scheduled row of those priorities. The question is a plain subquery of the
    locking read: run at READ COMMITTED (see :func:`prepare_transaction`), it locks nothing
    (MySQL locks a subquery's rows only with a locking clause of its own; MariaDB reads them
    without a lock at that level), so it neither blocks nor is blocked.

    Rows scheduled ahead at a better priority would send every claim the long way (two more
    statements per such priority). So the last claim's better priorities that had no claimable
    row (``passed``) are asked about precisely instead: has one of them a ready row in these
    queues now (one range seek each: ``run_at <= now`` is a range within a priority), or is
    there a better priority that is not one of them? Only then the long way.
    """
    better = mysql_better_sql(table, descending, len(passed), queues)
    params = mysql_better_params(level, passed, now, queues)
    found, none_better = _lock_level(
        cursor, table, queues, limit, now, columns, level, better, params
    )
    return found if none_better else []
