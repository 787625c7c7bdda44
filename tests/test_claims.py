"""Claiming ready tasks: order, filters, limits, row locks, and the vendor SQL helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from django.db import OperationalError, connection
from django.test import override_settings
from django.utils import timezone

from background_tasks import claims
from background_tasks.claims import (
    claim_tasks,
    order_by_sql,
    postgresql_claim_sql,
    ready_where_sql,
    sqlite_claim_sql,
)
from background_tasks.models import CompletedTask, Task
from background_tasks.operations import cancel_waiting
from tests.fixtures import row_locked_elsewhere

NOW = timezone.now().replace(microsecond=0)


def make(
    name: str = "t", *, priority: int = 0, run_at: datetime | None = None, queue: str = "default"
) -> Task:
    return Task.objects.create(
        task_name="tests.testapp.tasks.record",
        params={"args": [name], "kwargs": {}},
        priority=priority,
        run_at=run_at or NOW - timedelta(minutes=1),
        queue=queue,
    )


def key(task: Task) -> str:
    return str(task.params["args"][0])


def claim_one_by_one() -> list[str]:
    """Claim one task at a time until none is left; return their keys in claim order."""
    order = []
    while claimed := claim_tasks("w", [], 1, now=NOW):
        order.append(key(claimed[0]))
    return order


# -- which rows, in which order ---------------------------------------------------------------


@pytest.mark.django_db
def test_claim__takes_higher_priority_first_then_older_run_at_then_lower_id() -> None:
    make("low", priority=-5, run_at=NOW - timedelta(hours=2))
    make("high-late", priority=10, run_at=NOW - timedelta(minutes=1))
    make("high-early", priority=10, run_at=NOW - timedelta(minutes=5))
    make("mid-first", priority=3, run_at=NOW - timedelta(minutes=3))
    make("mid-second", priority=3, run_at=NOW - timedelta(minutes=3))

    assert claim_one_by_one() == ["high-early", "high-late", "mid-first", "mid-second", "low"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "setting",
    [{"BACKGROUND_TASKS_PRIORITY_ORDERING": "ASC"}, {"BACKGROUND_TASK_PRIORITY_ORDERING": "ASC"}],
    ids=["prefixed", "legacy"],
)
def test_claim__asc_ordering_takes_lower_priority_first(setting: dict[str, str]) -> None:
    make("high", priority=10)
    make("low", priority=-5)
    make("zero", priority=0)

    with override_settings(**setting):
        assert claim_one_by_one() == ["low", "zero", "high"]


@pytest.mark.django_db
def test_claim__returns_a_batch_in_run_order() -> None:
    make("b", priority=1)
    make("a", priority=2)
    make("c", priority=0)

    assert [key(t) for t in claim_tasks("w", [], 10, now=NOW)] == ["a", "b", "c"]


@pytest.mark.django_db
def test_claim__takes_no_more_than_the_limit() -> None:
    for i in range(5):
        make(f"t{i}")

    claimed = claim_tasks("w", [], 2, now=NOW)

    assert [key(t) for t in claimed] == ["t0", "t1"]
    assert Task.objects.filter(locked_by__isnull=True).count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [0, -1])
def test_claim__a_limit_below_one_claims_nothing(limit: int) -> None:
    make()

    assert claim_tasks("w", [], limit, now=NOW) == []
    assert not Task.objects.filter(locked_by__isnull=False).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("queues", "expected"),
    [([], {"a", "b", "c"}), (["a"], {"a"}), (["a", "c"], {"a", "c"}), (["nope"], set())],
)
def test_claim__only_takes_tasks_of_the_given_queues(queues: list[str], expected: set[str]) -> None:
    for queue in ("a", "b", "c"):
        make(queue, queue=queue)

    assert {key(t) for t in claim_tasks("w", queues, 10, now=NOW)} == expected


@pytest.mark.django_db
def test_claim__leaves_tasks_scheduled_after_now() -> None:
    make("due", run_at=NOW)
    make("later", run_at=NOW + timedelta(seconds=1))

    assert [key(t) for t in claim_tasks("w", [], 10, now=NOW)] == ["due"]
    assert [key(t) for t in claim_tasks("w", [], 10, now=NOW + timedelta(seconds=1))] == ["later"]


@pytest.mark.django_db
def test_claim__skips_rows_locked_by_another_worker() -> None:
    make("held")
    Task.objects.update(locked_by="other-worker", locked_at=NOW)
    make("free")

    assert [key(t) for t in claim_tasks("w", [], 10, now=NOW)] == ["free"]
    assert Task.objects.filter(locked_by="other-worker").count() == 1


@pytest.mark.django_db
def test_claim__marks_the_rows_as_held_and_counts_the_attempt() -> None:
    task = make()
    Task.objects.filter(pk=task.pk).update(attempts=2)

    (claimed,) = claim_tasks("worker-1", [], 1, now=NOW)

    row = Task.objects.get(pk=task.pk)
    assert (row.locked_by, row.locked_at, row.attempts) == ("worker-1", NOW, 3)
    assert (claimed.locked_by, claimed.attempts) == ("worker-1", 3)


@pytest.mark.django_db
def test_claim__two_claims_never_return_the_same_row() -> None:
    for i in range(4):
        make(f"t{i}")

    first = claim_tasks("w1", [], 3, now=NOW)
    second = claim_tasks("w2", [], 3, now=NOW)

    assert len(first) == 3
    assert len(second) == 1
    assert {t.pk for t in first}.isdisjoint({t.pk for t in second})


# -- pure SQL helpers -------------------------------------------------------------------------


def test_order_by_sql__priority_direction_then_run_at_then_id() -> None:
    assert order_by_sql(True) == "priority DESC, run_at ASC, id ASC"
    assert order_by_sql(False) == "priority ASC, run_at ASC, id ASC"


def test_ready_where_sql__adds_one_placeholder_per_queue() -> None:
    assert ready_where_sql([]) == ("locked_by IS NULL AND run_at <= %s", [])
    assert ready_where_sql(["a", "b"]) == (
        "locked_by IS NULL AND run_at <= %s AND queue IN (%s, %s)",
        ["a", "b"],
    )


def test_postgresql_claim_sql__locks_with_skip_locked_inside_a_cte_and_returns_ids() -> None:
    sql = postgresql_claim_sql('"task"', ["a", "b"], descending=True)

    assert sql.startswith('WITH claimable AS (SELECT id FROM "task" WHERE ')
    assert "ORDER BY priority DESC, run_at ASC, id ASC LIMIT %s FOR UPDATE SKIP LOCKED)" in sql
    assert "attempts = CASE WHEN attempts < 2147483647 THEN attempts + 1 ELSE attempts END" in sql
    assert sql.endswith('RETURNING "task".id')
    # now, two queues, limit, worker id, locked_at: the order _claim_postgresql passes them in.
    assert sql.count("%s") == 6
    assert sql.index("run_at <= %s") < sql.index("LIMIT %s") < sql.index("locked_by = %s")


def test_sqlite_claim_sql__is_one_update_with_a_limited_subquery_and_no_row_locks() -> None:
    sql = sqlite_claim_sql('"task"', ["a"], descending=False)

    assert sql.startswith(
        'UPDATE "task" SET locked_by = %s, locked_at = %s, '
        "attempts = CASE WHEN attempts < 2147483647 THEN attempts + 1 ELSE attempts END WHERE "
    )
    assert 'WHERE locked_by IS NULL AND id IN (SELECT id FROM "task" WHERE ' in sql
    assert "ORDER BY priority ASC, run_at ASC, id ASC LIMIT %s) RETURNING id" in sql
    assert "FOR UPDATE" not in sql
    # worker id, locked_at, now, one queue, limit: the order _claim_sqlite passes them in.
    assert sql.count("%s") == 5


# -- MySQL deadlock retries (the retry loop itself, on any database) ---------------------------


class FakeClaim:
    """Stands in for ``_claim_generic``: raises the given errors in turn, then returns [7]."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls = 0

    def __call__(self, *args: object) -> list[int]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return [7]


@pytest.mark.parametrize("code", [1213, 1205])
def test_mysql_claim__retries_a_deadlock_or_lock_wait_timeout(
    code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClaim([OperationalError(code, "try again")] * 2)
    monkeypatch.setattr(claims, "_claim_generic", fake)

    assert claims._claim_mysql("default", "w", [], 1, NOW, True) == [7]
    assert fake.calls == 3


def test_mysql_claim__other_errors_are_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClaim([OperationalError(2006, "server has gone away")])
    monkeypatch.setattr(claims, "_claim_generic", fake)

    with pytest.raises(OperationalError, match="gone away"):
        claims._claim_mysql("default", "w", [], 1, NOW, True)
    assert fake.calls == 1


def test_mysql_claim__gives_up_after_the_last_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClaim([OperationalError(1213, "deadlock")] * (claims.MYSQL_RETRIES + 1))
    monkeypatch.setattr(claims, "_claim_generic", fake)

    with pytest.raises(OperationalError, match="deadlock"):
        claims._claim_mysql("default", "w", [], 1, NOW, True)
    assert fake.calls == claims.MYSQL_RETRIES


# -- row locks held by another open transaction (PostgreSQL, MySQL/MariaDB) --------------------

row_locking = pytest.mark.skipif(
    connection.vendor not in ("postgresql", "mysql"),
    reason="only PostgreSQL and MySQL/MariaDB have row locks (SQLite locks the whole database)",
)


@contextmanager
def short_lock_waits() -> Iterator[None]:
    """Make this connection fail after 3 s instead of waiting for a lock (a waiting claim fails)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET lock_timeout = '3s'")
        else:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 3")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("RESET lock_timeout")
            else:
                cursor.execute("SET SESSION innodb_lock_wait_timeout = DEFAULT")


@row_locking
@pytest.mark.django_db(transaction=True)
def test_claim__skips_a_row_locked_by_another_transaction_instead_of_waiting() -> None:
    busy = make("busy", priority=10)
    make("free")

    with short_lock_waits(), row_locked_elsewhere(busy.pk):
        claimed = claim_tasks("w", [], 2, now=NOW)

    assert [key(t) for t in claimed] == ["free"]
    # Once the other transaction ends, the row is claimable again.
    assert [key(t) for t in claim_tasks("w", [], 2, now=NOW)] == ["busy"]


@row_locking
@pytest.mark.django_db(transaction=True)
def test_cancel_waiting__skips_a_row_locked_by_another_transaction_instead_of_waiting() -> None:
    busy = make("busy")
    free = make("free")

    with short_lock_waits(), row_locked_elsewhere(busy.pk):
        cancelled, _ = cancel_waiting([busy.pk, free.pk])

    assert cancelled == 1
    assert list(Task.objects.values_list("pk", flat=True)) == [busy.pk]
    assert CompletedTask.objects.get().task_id == free.pk


def _sqlite_claim_plan(queues: list[str]) -> str:
    from background_tasks.claims import sqlite_claim_sql
    from background_tasks.models import Task

    table = connection.ops.quote_name(Task._meta.db_table)
    sql = sqlite_claim_sql(table, queues, descending=True)
    params = ["w", "2026-01-01 00:00:00", "2026-01-01 00:00:00", *queues, 1]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return " | ".join(str(row[-1]) for row in cursor.fetchall())


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's planner only")
def test_sqlite_claim_plan__all_queues_walks_the_claim_index_without_sorting() -> None:
    plan = _sqlite_claim_plan([])

    assert "USING INDEX bgtasks_task_claim" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's planner only")
@pytest.mark.parametrize("queues", [["a"], ["a", "b"]])
def test_sqlite_claim_plan__named_queues_use_the_queue_index(queues: list[str]) -> None:
    plan = _sqlite_claim_plan(queues)

    # Only that queue's rows are read (a sort, if any, is over its ready rows alone).
    assert "USING INDEX bgtasks_task_queue_claim" in plan, plan
