"""The admin dashboard against a large history: how long a whole page takes, and its queries.

Fills CompletedTask with ``rows`` outcomes (2% failed, 1% cancelled, the rest succeeded) spread
evenly over a span (30 days: a month of history; 24 hours: a busy day, every row within the
day chart), adds a small live queue, then requests the dashboard through Django's test client
as a logged-in superuser, the whole stack: middleware, session, queries, template.

The hourly summary starts empty, as after a deployment with no worker running: the first page
load (cold) counts the 23 closed hours of the day and stores them; it is timed on its own, with
the time its hour counts and insert took. The timed loads that follow (warm) read the summary.
Last, one worker pruning pass counting the hours it may count per pass is timed. Each query's
time comes from Django's own query log; each history query's plan from EXPLAIN.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from background_tasks import outcome_hours
from background_tasks.models import CompletedTask, OutcomeHour, Task

from . import db
from .tasks import NOOP_NAME

#: (label, span of the history)
SPANS = (("30 days", timedelta(days=30)), ("24 hours", timedelta(hours=24)))


@dataclass
class DashboardResult:
    label: str
    rows: int
    insert_seconds: float
    cold_ms: float
    cold_queries: int
    hours_counted: int
    fill_ms: float
    rounds: int
    median_ms: float
    p95_ms: float
    max_ms: float
    queries: int
    query_ms: list[tuple[str, float]] = field(default_factory=list)
    plans: list[tuple[str, str]] = field(default_factory=list)
    pass_hours: int = 0
    pass_ms: float = 0.0


def history_rows(count: int, now: datetime, span: timedelta) -> Iterable[CompletedTask]:
    """Yield outcomes spread evenly over ``span`` before ``now``, oldest first."""
    step = span / count
    for i in range(count):
        finished = now - span + step * i
        status = "failed" if i % 50 == 0 else "cancelled" if i % 100 == 1 else "succeeded"
        yield CompletedTask(
            task_id=i + 1,
            task_name=NOOP_NAME,
            params={"args": [], "kwargs": {}},
            task_hash="0" * 40,
            status=status,
            last_error="Traceback (most recent call last):\n  ...\nValueError: bench"
            * (status == "failed"),
            worker="bench:history",
            attempts=1,
            run_at=finished,
            created_at=finished,
            started_at=finished,
            finished_at=finished,
        )


def _vacuum() -> None:
    """PostgreSQL: set the visibility map, as autovacuum soon would after a bulk load."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {CompletedTask._meta.db_table}")


def _plan(sql: str) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("EXPLAIN " + sql)
            return " / ".join(
                line.strip() for (line,) in cursor.fetchall() if "Scan" in line or "Sort" in line
            )
        if connection.vendor == "mysql":
            cursor.execute("EXPLAIN " + sql)
            names = [c[0] for c in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            return " / ".join(
                f"type={r['type']} key={r['key']} rows={r['rows']} {r.get('Extra') or ''}".strip()
                for r in rows
            )
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        return " / ".join(str(row[-1]) for row in cursor.fetchall())


#: The dashboard's queries once the summary is filled, in the order the view runs them.
QUERY_NAMES = (
    "session",
    "user",
    "live counts",
    "day summary",
    "per minute (live)",
    "latest failures",
    "running tasks",
    "workers",
    "next ticks",
)


def _name(index: int) -> str:
    return QUERY_NAMES[index] if index < len(QUERY_NAMES) else f"query {index + 1}"


def measure(rows: int, rounds: int) -> list[DashboardResult]:
    user_model = get_user_model()
    user_model.objects.filter(username="bench").delete()
    user = user_model.objects.create_superuser("bench", password="not-used")
    client = Client()
    client.force_login(user)
    url = reverse("admin:background_tasks_dashboard")
    results = []
    try:
        for label, span in SPANS:
            db.empty()
            db.empty([OutcomeHour])
            now = timezone.now()
            started = time.perf_counter()
            inserted = db.insert(CompletedTask, history_rows(rows, now, span))
            db.insert(Task, db.noop_task_rows(300, run_at=now - timedelta(minutes=5)))
            db.insert(Task, db.noop_task_rows(300, run_at=now + timedelta(hours=1), queue="later"))
            insert_seconds = time.perf_counter() - started
            db.analyze()
            _vacuum()
            history = CompletedTask._meta.db_table
            summary = OutcomeHour._meta.db_table
            # Cold: the first load finds no summary and fills it.
            with CaptureQueriesContext(connection) as cold:
                begin = time.perf_counter()
                assert client.get(url).status_code == 200
                cold_ms = (time.perf_counter() - begin) * 1000
            # Copied now: the next request resets the query log the context reads from.
            cold_queries = list(cold.captured_queries)
            fill = [
                q
                for q in cold_queries
                # An hour's count is the one history query that counts cancelled outcomes.
                if (history in q["sql"] and "cancelled" in q["sql"] and "GROUP BY" in q["sql"])
                or (summary in q["sql"] and q["sql"].lstrip().upper().startswith("INSERT"))
            ]
            counts = [q for q in fill if history in q["sql"]]
            for _ in range(3):  # warm-up: caches, connection, template loading
                assert client.get(url).status_code == 200
            times = []
            for _ in range(rounds):
                begin = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - begin) * 1000)
                assert response.status_code == 200
            with CaptureQueriesContext(connection) as captured:
                client.get(url)
            queries = list(captured.captured_queries)
            # A worker's pruning pass after a stop: the latest hours it may count in one pass.
            latest = outcome_hours.hour_of(timezone.now()) - outcome_hours.HOUR
            OutcomeHour.objects.filter(
                hour__gt=latest - outcome_hours.HOUR * outcome_hours.HOURS_PER_PASS
            ).delete()
            missing_before = OutcomeHour.objects.count()
            begin = time.perf_counter()
            outcome_hours.keep_up(timezone.now())
            pass_ms = (time.perf_counter() - begin) * 1000
            results.append(
                DashboardResult(
                    label=label,
                    rows=inserted,
                    insert_seconds=insert_seconds,
                    cold_ms=cold_ms,
                    cold_queries=len(cold_queries),
                    hours_counted=len(counts),
                    fill_ms=sum(float(q["time"]) * 1000 for q in fill),
                    rounds=rounds,
                    median_ms=statistics.median(times),
                    p95_ms=sorted(times)[max(int(len(times) * 0.95) - 1, 0)],
                    max_ms=max(times),
                    queries=len(queries),
                    query_ms=[(_name(i), float(q["time"]) * 1000) for i, q in enumerate(queries)],
                    plans=[
                        *(("hour count (cold)", _plan(q["sql"])) for q in counts[:1]),
                        *(
                            (_name(i), _plan(q["sql"]))
                            for i, q in enumerate(queries)
                            if history in q["sql"]
                        ),
                    ],
                    pass_hours=OutcomeHour.objects.count() - missing_before,
                    pass_ms=pass_ms,
                )
            )
    finally:
        user.delete()
        db.empty([OutcomeHour])
    return results
