"""Claiming ready tasks: order, filters, limits, row locks, and the vendor SQL helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from background_tasks import claims
from background_tasks.claims import (
    claim_tasks,
    order_by_sql,
    postgresql_claim_params,
    postgresql_claim_sql,
    ready_where_sql,
    sqlite_claim_params,
    sqlite_claim_sql,
)
from background_tasks.deadlocks import MYSQL_RETRIES
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


@pytest.mark.django_db
def test_claim__takes_a_ready_row_below_scheduled_rows_of_a_better_priority() -> None:
    for i in range(20):
        make(f"later{i}", priority=10, run_at=NOW + timedelta(days=1, minutes=i))
    make("ready-low", priority=-3)
    make("ready-mid", priority=5)

    assert claim_one_by_one() == ["ready-mid", "ready-low"]


@pytest.mark.django_db
def test_claim__fills_the_limit_from_several_priorities_best_first() -> None:
    make("p1-late", priority=1, run_at=NOW - timedelta(minutes=1))
    make("p1-early", priority=1, run_at=NOW - timedelta(minutes=9))
    make("p7", priority=7)
    make("p7-future", priority=7, run_at=NOW + timedelta(hours=1))
    make("p3", priority=3)

    claimed = claim_tasks("w", [], 3, now=NOW)

    assert [key(t) for t in claimed] == ["p7", "p3", "p1-early"]


@pytest.mark.django_db
@pytest.mark.parametrize("queues", [[], ["default"], ["default", "other"]])
def test_claim__a_better_priority_that_became_ready_since_the_last_claim_goes_first(
    queues: list[str],
) -> None:
    # On MySQL/MariaDB a claim tries the priority of the last one first (claims.py
    # _lock_at_last_level): a better priority that became ready since must still go first.
    make("first")
    make("second")
    make("third")
    assert [key(t) for t in claim_tasks("w", queues, 1, now=NOW)] == ["first"]
    assert [key(t) for t in claim_tasks("w", queues, 1, now=NOW)] == ["second"]

    make("urgent", priority=5)

    assert [key(t) for t in claim_tasks("w", queues, 1, now=NOW)] == ["urgent"]
    assert [key(t) for t in claim_tasks("w", queues, 1, now=NOW)] == ["third"]


@pytest.mark.django_db
def test_claim__a_better_priority_scheduled_later_leaves_the_last_claims_priority_claimable() -> (
    None
):
    make("first", priority=1)
    make("second", priority=1)
    make("low", priority=-1)
    assert [key(t) for t in claim_tasks("w", [], 1, now=NOW)] == ["first"]

    make("later", priority=5, run_at=NOW + timedelta(hours=1))

    assert claim_one_by_one() == ["second", "low"]


@pytest.mark.django_db
@pytest.mark.parametrize("queues", [[], ["default"], ["default", "other"]])
def test_claim__a_better_priority_passed_over_goes_first_once_it_has_a_ready_row(
    queues: list[str],
) -> None:
    # On MySQL/MariaDB a claim remembers the better priorities the last one found nothing
    # ready in, and asks only about those: a ready row arriving there must still go first.
    make("later", priority=5, run_at=NOW + timedelta(hours=1))
    make("held", priority=5)
    Task.objects.filter(params__args=["held"]).update(locked_by="other", locked_at=NOW)
    for name in ("first", "second", "third", "fourth"):
        make(name)
    assert [key(t) for t in claim_tasks("w", queues, 1, now=NOW)] == ["first"]
    assert [key(t) for t in claim_tasks("w", queues, 1, now=NOW)] == ["second"]

    make("urgent", priority=5)  # a ready row at a priority passed over
    assert [key(t) for t in claim_tasks("w", queues, 1, now=NOW)] == ["urgent"]
    assert [key(t) for t in claim_tasks("w", queues, 1, now=NOW)] == ["third"]

    Task.objects.filter(params__args=["held"]).update(locked_by=None, locked_at=None)
    assert [key(t) for t in claim_tasks("w", queues, 1, now=NOW)] == ["held"]  # released
    assert [key(t) for t in claim_tasks("w", queues, 1, now=NOW)] == ["fourth"]


@pytest.mark.django_db
def test_claim__a_ready_row_of_a_passed_priority_in_another_queue_is_not_taken() -> None:
    make("later", priority=5, run_at=NOW + timedelta(hours=1))
    for name in ("first", "second"):
        make(name)
    assert [key(t) for t in claim_tasks("w", ["default"], 1, now=NOW)] == ["first"]

    make("elsewhere", priority=5, queue="other")

    assert [key(t) for t in claim_tasks("w", ["default"], 1, now=NOW)] == ["second"]


@pytest.mark.django_db
def test_claim__several_queues_are_merged_in_run_order() -> None:
    make("a-old", queue="a", run_at=NOW - timedelta(minutes=9))
    make("b-older", queue="b", run_at=NOW - timedelta(minutes=10))
    make("a-new", queue="a", run_at=NOW - timedelta(minutes=1))
    make("b-mid", queue="b", run_at=NOW - timedelta(minutes=5))
    make("c-oldest", queue="c", run_at=NOW - timedelta(hours=1))

    claimed = claim_tasks("w", ["a", "b"], 3, now=NOW)

    assert [key(t) for t in claimed] == ["b-older", "a-old", "b-mid"]
    assert [key(t) for t in claim_tasks("w", ["a", "b"], 3, now=NOW)] == ["a-new"]


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
    sql = postgresql_claim_sql('"task"', ["a"], descending=True)

    assert sql.startswith("WITH RECURSIVE levels (p) AS (SELECT (SELECT priority FROM ")
    assert "priority = (SELECT p FROM top) ORDER BY run_at ASC, id ASC LIMIT %s" in sql
    assert "LIMIT %s FOR UPDATE SKIP LOCKED)" in sql
    assert "attempts = CASE WHEN attempts < 2147483647 THEN attempts + 1 ELSE attempts END" in sql
    assert sql.endswith('RETURNING "task".id')
    params = postgresql_claim_params("w", ["a"], 1, NOW)
    assert sql.count("%s") == len(params)
    assert params[-2:] == ["w", NOW]


def test_postgresql_claim_sql__several_queues_lock_each_queue_in_its_own_branch() -> None:
    sql = postgresql_claim_sql('"task"', ["a", "b", "c"], descending=False)

    assert "ORDER BY priority ASC LIMIT 1" in sql

    assert sql.startswith("WITH RECURSIVE levels (p) AS (SELECT (SELECT priority FROM ")
    assert sql.count("FOR UPDATE SKIP LOCKED") == 4  # one per queue, one in the priority check
    # Two join the branches, one is the recursive CTE's.
    assert sql.count("UNION ALL") == 3
    assert sql.count("%s") == len(postgresql_claim_params("w", ["a", "b", "c"], 2, NOW))


def test_sqlite_claim_sql__is_one_update_with_a_limited_subquery_and_no_row_locks() -> None:
    sql = sqlite_claim_sql('"task"', ["a"], descending=False)

    assert sql.startswith(
        'UPDATE "task" SET locked_by = %s, locked_at = %s, '
        "attempts = CASE WHEN attempts < 2147483647 THEN attempts + 1 ELSE attempts END WHERE "
    )
    assert "WHERE locked_by IS NULL AND id IN (WITH RECURSIVE levels (p) AS (" in sql
    assert "ORDER BY run_at ASC, id ASC LIMIT %s) RETURNING id" in sql
    assert "FOR UPDATE" not in sql
    assert sql.count("%s") == len(sqlite_claim_params("w", ["a"], 1, "now"))


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
    fake = FakeClaim([OperationalError(1213, "deadlock")] * (MYSQL_RETRIES + 1))
    monkeypatch.setattr(claims, "_claim_generic", fake)

    with pytest.raises(OperationalError, match="deadlock"):
        claims._claim_mysql("default", "w", [], 1, NOW, True)
    assert fake.calls == MYSQL_RETRIES


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
def test_claim__after_a_claim_a_held_row_of_a_better_priority_is_neither_waited_for_nor_taken() -> (
    None
):
    make("first")
    make("second")
    assert [key(t) for t in claim_tasks("w", [], 1, now=NOW)] == ["first"]
    busy = make("busy", priority=10)

    # The next claim asks whether a row of a better priority exists: the question takes no
    # lock, so a row another transaction holds makes it read the priorities, not wait.
    with short_lock_waits(), row_locked_elsewhere(busy.pk):
        assert [key(t) for t in claim_tasks("w", [], 1, now=NOW)] == ["second"]
    assert [key(t) for t in claim_tasks("w", [], 1, now=NOW)] == ["busy"]


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


def _sqlite_claim_plan(queues: list[str]) -> list[tuple[int, int, str]]:
    table = connection.ops.quote_name(Task._meta.db_table)
    sql = sqlite_claim_sql(table, queues, descending=True)
    params = sqlite_claim_params("w", queues, 1, "2026-01-01 00:00:00")
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return [(node, parent, str(detail)) for node, parent, _, detail in cursor.fetchall()]


def _sorted_task_reads(plan: list[tuple[int, int, str]]) -> list[str]:
    """Reads of the task table that a sort (a temp B-tree) sits beside, in the same scope."""
    table = Task._meta.db_table
    sorted_scopes = {parent for _, parent, detail in plan if "TEMP B-TREE" in detail}
    return [
        detail
        for _, parent, detail in plan
        if parent in sorted_scopes and f" {table} " in f"{detail} "
    ]


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's planner only")
@pytest.mark.parametrize(
    ("queues", "index"),
    [
        ([], "bgtasks_task_claim"),
        (["a"], "bgtasks_task_queue_claim"),
        (["a", "b"], "bgtasks_task_queue_claim"),
    ],
)
def test_sqlite_claim_plan__reads_one_priority_by_index_seek_and_sorts_no_task_rows(
    queues: list[str], index: str
) -> None:
    plan = _sqlite_claim_plan(queues)
    text = " | ".join(detail for _, _, detail in plan)

    task_reads = [
        d for _, _, d in plan if d.startswith(f"SEARCH {Task._meta.db_table} USING INDEX")
    ]
    assert task_reads, text
    # Every read of ready rows is a seek into one priority's ready range, never a walk over
    # the scheduled rows of better priorities.
    assert all(
        f"USING INDEX {index} (" in d and "priority=? AND run_at<?" in d for d in task_reads
    ), text
    assert _sorted_task_reads(plan) == [], text


def _fill_far_future(count: int, priority: int = 10) -> None:
    Task.objects.bulk_create(
        Task(
            task_name="tests.testapp.tasks.record",
            params={"args": ["later"], "kwargs": {}},
            task_hash="x",
            priority=priority,
            run_at=NOW + timedelta(days=1, seconds=i),
        )
        for i in range(count)
    )


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner only")
@pytest.mark.parametrize("queues", [[], ["a"], ["a", "b"]])
def test_postgresql_claim_plan__reads_one_priority_by_index_seek_and_sorts_no_task_rows(
    queues: list[str],
) -> None:
    _fill_far_future(500)
    make("ready", queue="a")
    table = connection.ops.quote_name(Task._meta.db_table)
    sql = postgresql_claim_sql(table, queues, descending=True)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
        # As on a big table: the planner would read a table this small whole.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN " + sql, postgresql_claim_params("w", queues, 1, NOW))
        lines = [row[0] for row in cursor.fetchall()]
    text = "\n".join(lines)

    # Each read of ready rows (those filtering on locked_by) seeks into one priority's ready
    # range: never a walk over the scheduled rows of better priorities.
    table_name = Task._meta.db_table
    scans = [i for i, line in enumerate(lines) if "Scan" in line and f" on {table_name} " in line]
    ready_reads = []
    for i in scans:
        details = []
        for line in lines[i + 1 :]:
            if "->" in line or not line.strip().startswith(("Index Cond", "Filter")):
                break
            details.append(line)
        if any("locked_by IS NULL" in d for d in details):
            ready_reads.append(details)
    assert ready_reads, text
    for details in ready_reads:
        cond = next((d for d in details if "Index Cond" in d), "")
        assert "(priority = " in cond and "run_at <=" in cond, text
    # No sort takes task rows straight from a scan (sorts of the few priorities or of the
    # queues x LIMIT merged rows sit above a CTE or an Append instead).
    for i, line in enumerate(lines):
        if line.strip().lstrip("-> ").startswith("Sort"):
            child = next(x for x in lines[i + 1 :] if "->" in x)
            assert Task._meta.db_table not in child or "nxt" in child, text


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "mysql", reason="MySQL/MariaDB's planner only")
@pytest.mark.parametrize("queues", [[], ["a"]])
def test_mysql_claim_plan__reads_one_priority_by_index_range_without_filesort(
    queues: list[str],
) -> None:
    _fill_far_future(500)
    make("ready", queue="a")
    table = connection.ops.quote_name(Task._meta.db_table)
    select = claims.candidates_sql(table, queues, " FOR UPDATE SKIP LOCKED", False, "%s")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + claims.mysql_level_sql(table, True, below=True), [10])
        top = cursor.fetchall()
        columns = [c[0] for c in cursor.description]
        cursor.execute("EXPLAIN " + select, [NOW, *queues, 0, 1])
        read = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    top_rows = [dict(zip(columns, row, strict=True)) for row in top]

    assert [(r["type"], r["key"]) for r in read] in (
        [("range", "bgtasks_task_claim")],
        [("range", "bgtasks_task_queue_claim")],
    ), read
    assert "filesort" not in str(read[0]["Extra"]), read
    # The next priority below the far-future rows' is found by one index seek, never by
    # scanning the index or the table from its start.
    assert [(r["type"], r["key"]) for r in top_rows] == [("range", "bgtasks_task_claim")], top_rows


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "mysql", reason="MySQL/MariaDB's claim only")
@pytest.mark.parametrize("queues", [[], ["default"], ["default", "other"]])
def test_mysql_claim__examines_a_few_index_entries_however_many_rows_a_better_priority_holds(
    queues: list[str],
) -> None:
    if not connection.mysql_is_mariadb:
        pytest.skip("MariaDB's Handler_icp_attempts counts the index entries a statement read")
    # Rows scheduled ahead at a better priority than the ready one: a claim that read every
    # row of that priority to learn that none is ready would examine all of them.
    _fill_far_future(3000)
    ready = make("ready")

    with connection.cursor() as cursor:
        cursor.execute("FLUSH STATUS")
        claimed = claims.claim_tasks("w1", queues, 1, now=NOW)
        cursor.execute("SHOW SESSION STATUS LIKE 'Handler_icp_attempts'")
        examined = int(cursor.fetchone()[1])

    assert [task.pk for task in claimed] == [ready.pk]
    assert examined < 50, examined


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "mysql", reason="MySQL/MariaDB's claim only")
@pytest.mark.parametrize("queues", [[], ["default"]])
def test_mysql_claim__rows_scheduled_at_a_better_priority_cost_no_statement_after_the_first(
    queues: list[str],
) -> None:
    if not connection.mysql_is_mariadb:
        pytest.skip("MariaDB's Handler_icp_attempts counts the index entries a statement read")
    _fill_far_future(3000)
    for name in ("first", "second"):
        make(name)
    assert [key(t) for t in claims.claim_tasks("w1", queues, 1, now=NOW)] == ["first"]

    with CaptureQueriesContext(connection) as statements, connection.cursor() as cursor:
        cursor.execute("FLUSH STATUS")
        claimed = claims.claim_tasks("w1", queues, 1, now=NOW)
        cursor.execute("SHOW SESSION STATUS LIKE 'Handler_icp_attempts'")
        examined = int(cursor.fetchone()[1])

    assert [key(t) for t in claimed] == ["second"]
    sent = [q["sql"] for q in statements.captured_queries]
    # The locking read alone (START TRANSACTION may go with it): no read of the priorities,
    # none of the passed-over priority.
    assert len([sql for sql in sent if "FOR UPDATE" in sql]) == 1, sent
    assert not [sql for sql in sent if "ORDER BY priority" in sql], sent
    assert examined < 50, examined


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "mysql", reason="MySQL/MariaDB's planner only")
def test_mysql_claim_plan__the_better_priority_question_is_an_index_range_seek() -> None:
    _fill_far_future(500)
    make("ready")
    table = connection.ops.quote_name(Task._meta.db_table)
    select = claims.candidates_sql(table, [], " FOR UPDATE SKIP LOCKED", False, "%s")
    better = claims.mysql_better_sql(table, descending=True)
    select = select.replace("SELECT id FROM", f"SELECT id, {better} FROM", 1)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + select, [0, NOW, 0, 1])
        columns = [c[0] for c in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    # Both reads seek the claim index: the question reads one entry past the priority, never
    # the far-future rows of the better priorities.
    assert [(r["type"], r["key"]) for r in rows] == [("range", "bgtasks_task_claim")] * 2, rows
    assert "filesort" not in str(rows), rows
