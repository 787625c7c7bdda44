"""Does the claim cost stay flat as history and far-future scheduled rows pile up?

For each scenario the claim query is EXPLAINed (with ANALYZE where the database has it) and
timed over a run of claims, each followed by a release of the claimed row so that the queue
looks the same to every claim.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from background_tasks import claims
from background_tasks.claims import claim_tasks
from background_tasks.conf import app_settings
from background_tasks.lifecycle import release
from background_tasks.models import CompletedTask, Task

from . import db

CLAIM_INDEXES = ("bgtasks_task_claim", "bgtasks_task_queue_claim")
READY_ROWS = 1_000
WARMUP = 10
WORKER_ID = "bench:claims"
# A scenario is flagged when its median and its fastest claim time both exceed the
# baseline's by both of these.
FLAG_RATIO = 1.5
FLAG_MILLIS = 0.1
# ... or when the work its plan reports (buffers, rows examined) grows by both of these.
FLAG_WORK_RATIO = 2.0
FLAG_WORK_DELTA = 20

QUEUE_VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("all queues", ()),
    ("--queue default", ("default",)),
    ("--queue default --queue other", ("default", "other")),
)


@dataclass(frozen=True)
class Plan:
    text: str
    index: str | None
    sorts: bool
    work: int | None = None
    work_unit: str = ""


@dataclass
class ClaimResult:
    scenario: str
    variant: str
    plan: Plan
    claim_millis: list[float]
    total_seconds: float
    fill_seconds: float = 0.0  # inserting the scenario's rows and ANALYZE
    flags: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.claim_millis)

    @property
    def fastest(self) -> float:
        return min(self.claim_millis)

    @property
    def p95(self) -> float:
        return statistics.quantiles(self.claim_millis, n=20)[-1]


@dataclass(frozen=True)
class Scenario:
    name: str
    fill: Callable[[datetime], int]


@dataclass(frozen=True)
class ClaimSizes:
    """Extra rows of each kind of scenario."""

    history: int  # CompletedTask rows
    scheduled: int  # Task rows scheduled far ahead (at each priority)
    backlog: int  # more ready Task rows


#: How far the far-future rows' priority is from the ready rows' (0), in the better direction.
PRIORITY_GAP = 10


def scenarios(sizes: ClaimSizes) -> list[Scenario]:
    def nothing(now: datetime) -> int:
        return 0

    def history(now: datetime) -> int:
        return _history(sizes.history, now)

    def future(priority: int) -> Callable[[datetime], int]:
        def fill(now: datetime) -> int:
            return _tasks(sizes.scheduled, now + timedelta(days=1), timedelta(days=365), priority)

        return fill

    def backlog(now: datetime) -> int:
        return _tasks(sizes.backlog, now - timedelta(hours=3), timedelta(hours=1), 0)

    # Which way is better follows PRIORITY_ORDERING (app_settings.priority_descending).
    better = PRIORITY_GAP if app_settings.priority_descending else -PRIORITY_GAP
    history_count, scheduled, more = (
        f"{n:,}" for n in (sizes.history, sizes.scheduled, sizes.backlog)
    )
    return [
        Scenario("baseline (empty history, nothing scheduled)", nothing),
        Scenario(f"(i) {history_count} CompletedTask rows", history),
        Scenario(f"(ii) {scheduled} far-future Task rows, same priority", future(0)),
        Scenario(f"(ii-b) {scheduled} far-future Task rows, better priority", future(better)),
        Scenario(f"(ii-c) {scheduled} far-future Task rows, worse priority", future(-better)),
        Scenario(f"(iii) {more} more ready Task rows (a deep backlog)", backlog),
    ]


def _history(count: int, now: datetime) -> int:
    """Insert ``count`` succeeded no-op outcomes, one a second, the last a second before ``now``."""
    first = next(iter(db.completed_rows(count, finished_before=now)))
    moving = ("run_at", "created_at", "started_at", "finished_at")
    return db.insert_series(
        CompletedTask, first, count, step=timedelta(seconds=1), moving=moving, counting=["task_id"]
    )


def _tasks(count: int, run_at: datetime, spread: timedelta, priority: int) -> int:
    """Insert ``count`` no-op Task rows from ``run_at`` on, ``spread`` apart in all."""
    first = next(iter(db.noop_task_rows(1, run_at=run_at, priority=priority)))
    moving = ("run_at", "scheduled_at", "created_at")
    return db.insert_series(Task, first, count, step=spread / count, moving=moving)


def measure(sizes: ClaimSizes, rounds: int) -> list[ClaimResult]:
    results: list[ClaimResult] = []
    for scenario in scenarios(sizes):
        db.empty()
        now = timezone.now()
        db.insert(
            Task,
            db.noop_task_rows(
                READY_ROWS, run_at=now - timedelta(hours=1), spread=timedelta(minutes=30)
            ),
        )
        started = time.perf_counter()
        scenario.fill(now)
        db.analyze()
        fill_seconds = time.perf_counter() - started
        for variant, queues in QUEUE_VARIANTS:
            plan = explain(queues)
            millis, total = time_claims(queues, rounds)
            results.append(ClaimResult(scenario.name, variant, plan, millis, total, fill_seconds))
    db.empty()
    flag(results)
    return results


def time_claims(queues: Sequence[str], rounds: int) -> tuple[list[float], float]:
    """Claim one task and release it, ``rounds`` times (after a warm-up); return the timings."""
    millis: list[float] = []
    start = 0.0
    for i in range(WARMUP + rounds):
        if i == WARMUP:
            start = time.perf_counter()
        before = time.perf_counter()
        tasks = claim_tasks(WORKER_ID, queues, 1)
        after = time.perf_counter()
        if len(tasks) != 1:
            raise RuntimeError(f"claim found {len(tasks)} tasks, expected 1")
        release(tasks, WORKER_ID)
        if i >= WARMUP:
            millis.append((after - before) * 1000)
    return millis, time.perf_counter() - start


def flag(results: list[ClaimResult]) -> None:
    """Mark results whose plan avoids the claim index or sorts, or whose cost grew."""
    baselines = {r.variant: r for r in results if r.scenario.startswith("baseline")}
    for result in results:
        if result.plan.index is None:
            result.flags.append("claim index not used")
        if result.plan.sorts:
            result.flags.append("sorts")
        base = baselines[result.variant]
        if result is base:
            continue
        # Both the median and the fastest claim must grow: load from other processes on the
        # machine inflates the median now and then, but seldom every single claim.
        grew = result.median / base.median
        floor_grew = result.fastest / base.fastest
        if (
            min(grew, floor_grew) > FLAG_RATIO
            and result.median - base.median > FLAG_MILLIS
            and result.fastest - base.fastest > FLAG_MILLIS
        ):
            result.flags.append(f"claim time x{grew:.1f}")
        work, base_work = result.plan.work, base.plan.work
        if work is not None and base_work:
            ratio = work / base_work
            if ratio > FLAG_WORK_RATIO and work - base_work > FLAG_WORK_DELTA:
                result.flags.append(f"{result.plan.work_unit} x{ratio:.0f}")


# -- EXPLAIN per vendor ----------------------------------------------------------------------


def explain(queues: Sequence[str]) -> Plan:
    if connection.vendor == "postgresql":
        return _explain_postgresql(queues)
    if connection.vendor == "sqlite":
        return _explain_sqlite(queues)
    if connection.vendor == "mysql":
        return _explain_mysql(queues)
    return Plan(f"EXPLAIN not implemented for {connection.vendor}", None, False)


def _claim_index(text: str) -> str | None:
    found = [name for name in CLAIM_INDEXES if re.search(rf"\b{name}\b", text)]
    return ",".join(found) or None


def _table() -> str:
    return connection.ops.quote_name(Task._meta.db_table)


def _explain_postgresql(queues: Sequence[str]) -> Plan:
    sql = claims.postgresql_claim_sql(_table(), queues, app_settings.priority_descending)
    params = claims.postgresql_claim_params(WORKER_ID, queues, 1, timezone.now())
    lines = _rolled_back("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
    text = "\n".join(row[0] for row in lines)
    # The first Buffers line belongs to the root node: the whole statement's pages.
    buffers = re.search(r"Buffers: shared ((?:\w+=\d+ ?)+)", text)
    pages = None
    if buffers:
        counts = dict(part.split("=") for part in buffers.group(1).split())
        pages = int(counts.get("hit", 0)) + int(counts.get("read", 0))
    return Plan(text, _claim_index(text), _postgresql_sorts_task_rows(text), pages, "buffers")


def _postgresql_sorts_task_rows(text: str) -> bool:
    """Whether a Sort node takes its rows straight from a scan of the task table.

    Sorts of the few priority levels or of the merged queues x LIMIT rows sit above a CTE scan
    or an Append: they are bounded, not a sort of the ready rows.
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*(->\s*)?(Incremental )?Sort\b", line):
            child = next((x for x in lines[i + 1 :] if "->" in x), "")
            if re.search(rf"Scan .* on {Task._meta.db_table}\b", child):
                return True
    return False


def _explain_sqlite(queues: Sequence[str]) -> Plan:
    sql = claims.sqlite_claim_sql(_table(), queues, app_settings.priority_descending)
    stamp = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN QUERY PLAN " + sql, claims.sqlite_claim_params(WORKER_ID, queues, 1, stamp)
        )
        rows = cursor.fetchall()
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    text = "\n".join(lines)
    # A sort counts when it sits beside a read of the task table in the same scope (not one
    # of the few priority levels or of the merged queues x LIMIT rows).
    sorted_scopes = {parent for _, parent, _, detail in rows if "TEMP B-TREE" in detail}
    sorts = any(
        parent in sorted_scopes and f" {Task._meta.db_table} " in f"{detail} "
        for _, parent, _, detail in rows
    )
    return Plan(text, _claim_index(text), sorts)


def _explain_mysql(queues: Sequence[str]) -> Plan:
    """EXPLAIN the locking SELECT that ``claim_tasks`` really sends (captured, then released)."""
    with CaptureQueriesContext(connection) as captured:
        tasks = claim_tasks(WORKER_ID, queues, 1)
    release(tasks, WORKER_ID)
    # The first locking read: one queue's ready rows at the best priority.
    select = next(q["sql"] for q in captured.captured_queries if "SKIP LOCKED" in q["sql"])
    explained = _rolled_back("EXPLAIN " + select, [], with_columns=True)
    columns, rows = explained[0], explained[1:]
    text = _format_rows(columns, rows)
    as_dicts = [dict(zip(columns, row, strict=True)) for row in rows]
    index = _claim_index(" ".join(str(r.get("key")) for r in as_dicts))
    sorts = any("filesort" in str(r.get("Extra") or "") for r in as_dicts)
    work = None
    if getattr(connection, "mysql_is_mariadb", False):
        # MariaDB's ANALYZE runs the statement and reports the rows it really read (r_rows).
        analyzed = _rolled_back("ANALYZE " + select, [], with_columns=True)
        columns, rows = analyzed[0], analyzed[1:]
        text += "\n\nANALYZE:\n" + _format_rows(columns, rows)
        work = round(
            sum(float(dict(zip(columns, row, strict=True)).get("r_rows") or 0) for row in rows)
        )
    else:
        analyzed = _rolled_back("EXPLAIN ANALYZE " + select, [])
        text += "\n\nEXPLAIN ANALYZE:\n" + "\n".join(str(row[0]) for row in analyzed)
    return Plan(text, index, sorts, work, "rows read")


def _rolled_back(sql: str, params: list[Any], with_columns: bool = False) -> list[Any]:
    """Run ``sql`` in a transaction that is rolled back (EXPLAIN ANALYZE really updates rows)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, params or None)
            rows = list(cursor.fetchall())
            columns = tuple(col[0] for col in cursor.description)
        transaction.set_rollback(True)
    return [columns, *rows] if with_columns else rows


def _format_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(columns)] + [["NULL" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells
    )
