"""The admin dashboard: what it shows, who may see it, and what it costs the database."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from background_tasks import overview
from background_tasks.conf import app_settings
from background_tasks.models import (
    CompletedTask,
    OutcomeHour,
    Schedule,
    Task,
    TaskState,
    Worker,
)
from tests.fixtures import CLOCK_START, Clock, StaffLogin

pytestmark = pytest.mark.django_db

DASHBOARD = "admin:background_tasks_dashboard"
NAME = "tests.testapp.tasks.send_newsletter"
HISTORY_TABLE = CompletedTask._meta.db_table
SCRIPT = "<script>alert('x')</script>"

Login = StaffLogin


ALL_VIEWS = ("view_task", "view_completedtask", "view_worker", "view_schedule")


def task(**fields: Any) -> Task:
    values: dict[str, Any] = {"task_name": NAME, "queue": "default"}
    values.update(fields)
    created: Task = Task.objects.create(**values)
    return created


def outcome(status: str, finished_at: datetime, **fields: Any) -> CompletedTask:
    values: dict[str, Any] = {
        "task_id": 1,
        "task_name": NAME,
        "status": status,
        "finished_at": finished_at,
    }
    values.update(fields)
    created: CompletedTask = CompletedTask.objects.create(**values)
    return created


def worker(worker_id: str, *, alive: bool) -> Worker:
    age = timedelta(0) if alive else timedelta(seconds=float(app_settings.RESCUE_AFTER) + 60)
    created: Worker = Worker.objects.create(
        id=worker_id,
        host="host-" + worker_id,
        pid=100,
        queues=["default"],
        last_heartbeat_at=timezone.now() - age,
    )
    return created


def populate(now: datetime) -> None:
    """A bit of everything the dashboard shows."""
    task(queue="default", run_at=now - timedelta(minutes=5))
    task(queue="default", run_at=now + timedelta(hours=1))
    task(queue="emails", run_at=now - timedelta(minutes=1), last_error="boom")
    worker("w1", alive=True)
    worker("w2", alive=False)
    task(queue="emails", locked_by="w1", locked_at=now, verbose_name="Send the digest")
    outcome("succeeded", now - timedelta(minutes=2))
    outcome(
        "failed",
        now - timedelta(minutes=3),
        last_error="Traceback (most recent call last):\n  x\nValueError: bad",
    )
    Schedule.objects.create(
        name="nightly", task_name=NAME, cron="0 3 * * *", next_fire_at=now + timedelta(hours=3)
    )


# -- access -------------------------------------------------------------------------------------


def test_dashboard__is_linked_from_the_app_index_and_the_task_list(admin_client: Client) -> None:
    url = reverse(DASHBOARD)
    app_index = admin_client.get(reverse("admin:app_list", args=["background_tasks"]))
    task_list = admin_client.get(reverse("admin:background_tasks_task_changelist"))

    assert f'href="{url}"' in app_index.content.decode()
    assert f'href="{url}"' in task_list.content.decode()
    assert admin_client.get(url).status_code == 200


def test_dashboard__asks_anonymous_users_to_log_in(client: Client) -> None:
    response = client.get(reverse(DASHBOARD))

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_dashboard__is_forbidden_without_view_task(staff: Login) -> None:
    client = staff("view_completedtask", "view_worker", "view_schedule")

    assert client.get(reverse(DASHBOARD)).status_code == 403


def test_dashboard__shows_only_the_sections_the_user_may_view(staff: Login) -> None:
    content = staff("view_task").get(reverse(DASHBOARD)).content.decode()

    assert 'id="bt-queues"' in content
    for section in ("bt-throughput", "bt-failures", "bt-workers", "bt-schedules"):
        assert f'id="{section}"' not in content


# -- what it shows ------------------------------------------------------------------------------


def test_dashboard__counts_live_tasks_per_queue_with_the_clis_state_definition(
    admin_client: Client,
) -> None:
    now = timezone.now()
    populate(now)

    response = admin_client.get(reverse(DASHBOARD))

    queues = {row.queue: row for row in response.context["queues"]}
    for name, row in queues.items():
        for status in TaskState.values:
            expected = Task.objects.filter(queue=name).in_state(status, now).count()
            assert row.counts[status] == expected, (name, status)
    assert queues["default"].counts == {
        "ready": 1,
        "scheduled": 1,
        "running": 0,
        "retrying": 0,
        "quarantined": 0,
    }
    assert queues["emails"].counts == {
        "ready": 0,
        "scheduled": 0,
        "running": 1,
        "retrying": 1,
        "quarantined": 0,
    }


def test_dashboard__shows_the_age_of_the_oldest_due_task_per_queue(admin_client: Client) -> None:
    now = timezone.now()
    task(queue="default", run_at=now - timedelta(minutes=30))
    task(queue="default", run_at=now - timedelta(minutes=5))
    task(queue="default", run_at=now - timedelta(hours=2), locked_by="w1")  # running: not waiting
    task(queue="later", run_at=now + timedelta(hours=1))

    response = admin_client.get(reverse(DASHBOARD))

    oldest = {row.queue: row.oldest_due_at for row in response.context["queues"]}
    assert oldest["later"] is None
    assert oldest["default"] is not None
    assert abs((now - oldest["default"]) - timedelta(minutes=30)) < timedelta(seconds=5)
    assert "30\xa0minutes" in response.content.decode()


def test_outcome_charts__count_successes_and_failures_per_minute_oldest_first() -> None:
    now = timezone.now().replace(second=30, microsecond=0)
    outcome("succeeded", now)
    outcome("succeeded", now - timedelta(seconds=10))
    outcome("failed", now - timedelta(minutes=2))
    outcome("cancelled", now)  # neither
    outcome("succeeded", now - timedelta(minutes=61))  # before the hour

    buckets = overview.outcome_charts(now).minutes

    assert len(buckets) == 60
    assert (buckets[-1].succeeded, buckets[-1].failed) == (2, 0)
    assert (buckets[-3].succeeded, buckets[-3].failed) == (0, 1)
    assert sum(b.succeeded + b.failed for b in buckets) == 3
    assert [b.start for b in buckets] == sorted(b.start for b in buckets)


def test_outcome_charts__count_per_hour_over_the_last_day() -> None:
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    outcome("failed", now - timedelta(hours=5))
    outcome("succeeded", now - timedelta(hours=23))
    outcome("succeeded", now - timedelta(hours=25))  # before the day
    outcome("succeeded", now - timedelta(minutes=10))  # this hour, counted live

    buckets = overview.outcome_charts(now).hours

    assert len(buckets) == 24
    assert buckets[-6].failed == 1
    assert buckets[0].succeeded == 1
    assert buckets[-1].succeeded == 1
    assert sum(b.succeeded + b.failed for b in buckets) == 3
    assert [b.start for b in buckets] == sorted(b.start for b in buckets)


def test_dashboard__draws_both_charts_as_inline_svg(admin_client: Client) -> None:
    now = timezone.now()
    outcome("succeeded", now)
    outcome("failed", now)

    content = admin_client.get(reverse(DASHBOARD)).content.decode()

    assert content.count('<svg viewBox="0 0 600 100"') == 2
    assert 'class="ok"' in content and 'class="bad"' in content
    assert ": 1 succeeded, 1 failed</title>" in content
    page = content.split('class="bt-dash"')[1].split("<!-- END Content -->")[0]
    assert "<script" not in page  # the admin's own theme script aside, no JavaScript


def test_dashboard__lists_the_latest_failures_with_their_exception_line_linking_to_the_row(
    admin_client: Client,
) -> None:
    now = timezone.now()
    old = outcome("failed", now - timedelta(hours=1), last_error="first line\nsecond line")
    new = outcome(
        "failed",
        now,
        last_error=f"Traceback (most recent call last):\n  File x\nValueError: {SCRIPT}\n",
    )
    outcome("succeeded", now)

    response = admin_client.get(reverse(DASHBOARD))

    assert [f.id for f in response.context["failures"]] == [new.pk, old.pk]
    content = response.content.decode()
    assert reverse("admin:background_tasks_completedtask_change", args=[new.pk]) in content
    assert "first line" in content and "second line" not in content
    assert "ValueError: &lt;script&gt;" in content
    assert SCRIPT not in content


def test_error_summary__takes_a_tracebacks_last_line_and_other_texts_first_line() -> None:
    assert overview.error_summary("Traceback (most recent call last):\n  a\nKeyError: 'k'\n") == (
        "KeyError: 'k'"
    )
    assert overview.error_summary("\nCancelled by admin.\n\nLast error...") == "Cancelled by admin."
    assert overview.error_summary("") == ""
    assert len(overview.error_summary("x" * 1000)) == 200


def test_dashboard__lists_live_then_lost_workers_with_what_each_runs(admin_client: Client) -> None:
    now = timezone.now()
    worker("lost-one", alive=False)
    worker("live-one", alive=True)
    running = task(locked_by="live-one", locked_at=now, verbose_name="Rebuild the index")

    response = admin_client.get(reverse(DASHBOARD))

    states = response.context["workers"]
    assert [(s.worker.id, s.alive) for s in states] == [("live-one", True), ("lost-one", False)]
    assert [t.id for t in states[0].running] == [running.pk]
    content = response.content.decode()
    assert "Rebuild the index" in content
    assert reverse("admin:background_tasks_task_change", args=[running.pk]) in content


def test_dashboard__lists_the_next_cron_ticks_soonest_first(admin_client: Client) -> None:
    now = timezone.now()
    Schedule.objects.create(
        name="later", task_name=NAME, cron="0 3 * * *", next_fire_at=now + timedelta(hours=5)
    )
    Schedule.objects.create(
        name="sooner", task_name=NAME, cron="* * * * *", next_fire_at=now + timedelta(seconds=40)
    )
    Schedule.objects.create(
        name="paused", task_name=NAME, cron="* * * * *", enabled=False, next_fire_at=now
    )
    Schedule.objects.create(
        name="orphaned", task_name=NAME, cron="* * * * *", orphaned_at=now, next_fire_at=now
    )

    response = admin_client.get(reverse(DASHBOARD))

    assert [s.name for s in response.context["schedules"]] == ["sooner", "later"]


def test_dashboard__refreshes_itself_only_when_asked(admin_client: Client) -> None:
    plain = admin_client.get(reverse(DASHBOARD)).content.decode()
    refreshing = admin_client.get(reverse(DASHBOARD) + "?refresh=30").content.decode()
    odd = admin_client.get(reverse(DASHBOARD) + "?refresh=1").content.decode()

    assert 'http-equiv="refresh"' not in plain
    assert '<meta http-equiv="refresh" content="30">' in refreshing
    assert 'http-equiv="refresh"' not in odd


# -- cost ---------------------------------------------------------------------------------------

#: Session and user, then: live counts, the day's hourly summary, outcomes per minute, failures,
#: running tasks, workers, schedules.
DASHBOARD_QUERIES = 2 + 7


def _is_history_query(sql: str) -> bool:
    return HISTORY_TABLE in sql


def test_dashboard__runs_the_same_few_queries_however_much_there_is(
    client: Client, django_user_model: type[User], clock: Clock
) -> None:
    user = django_user_model.objects.create_superuser("boss", password="not-used")
    client.force_login(user)
    clock.move_to(CLOCK_START + timedelta(minutes=30))
    now = timezone.now()

    populate(now)
    with CaptureQueriesContext(connection) as cold:
        assert client.get(reverse(DASHBOARD)).status_code == 200
    with CaptureQueriesContext(connection) as few:
        assert client.get(reverse(DASHBOARD)).status_code == 200
    for index in range(30):
        task(queue=f"q{index}")
        outcome("failed", now - timedelta(minutes=index), last_error="x")
        outcome("succeeded", now - timedelta(hours=index % 23 + 1), last_error="x")
        worker(f"extra{index}", alive=bool(index % 2))
        task(locked_by=f"extra{index}", locked_at=now)
    with CaptureQueriesContext(connection) as many:
        assert client.get(reverse(DASHBOARD)).status_code == 200

    assert len(few) == len(many) == DASHBOARD_QUERIES, json.dumps(
        [q["sql"] for q in many.captured_queries], indent=1
    )
    # The first load counted the 23 closed hours of the day, one query each, and stored them;
    # the next ones count none.
    history = [sql for sql in (q["sql"] for q in cold.captured_queries) if _is_history_query(sql)]
    assert len(history) == 23 + 2  # the hours, outcomes per minute, latest failures
    assert OutcomeHour.objects.count() == 23
    assert len([q for q in many.captured_queries if _is_history_query(q["sql"])]) == 2


def _history_queries(client: Client) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse(DASHBOARD)).status_code == 200
    found = [q["sql"] for q in queries.captured_queries if _is_history_query(q["sql"])]
    # A first load: an hour's count per closed hour, outcomes per minute, latest failures.
    assert len(found) == 23 + 2
    return found


def _full_scans(sql: str) -> list[str]:
    """Return how ``sql`` reads the history table in full, if it does (by EXPLAIN)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            nodes = []

            def walk(node: dict[str, Any]) -> None:
                nodes.append(node)
                for child in node.get("Plans", []):
                    walk(child)

            walk(plan[0]["Plan"])
            return [
                f"{n['Node Type']} on {n['Relation Name']}"
                for n in nodes
                if n.get("Relation Name") == HISTORY_TABLE and n["Node Type"] == "Seq Scan"
            ]
        if connection.vendor == "mysql":
            cursor.execute("EXPLAIN " + sql)
            columns = [c[0] for c in cursor.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            # ALL: a full table scan; index: a full scan of an index.
            return [
                f"type={r['type']} key={r['key']}"
                for r in rows
                if r["table"] == HISTORY_TABLE and r["type"] in ("ALL", "index")
            ]
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        details = [str(row[-1]) for row in cursor.fetchall()]
        # SQLite: SEARCH is an index range or lookup; SCAN reads a whole table or index.
        return [d for d in details if d.startswith("SCAN") and HISTORY_TABLE in d]


# Committed rows: ANALYZE TABLE commits on MySQL/MariaDB, so the test's data must be flushed.
@pytest.mark.django_db(transaction=True)
def test_dashboard__reads_the_history_by_index_ranges_never_a_full_scan(
    client: Client, django_user_model: type[User], clock: Clock
) -> None:
    user = django_user_model.objects.create_superuser("boss", password="not-used")
    client.force_login(user)
    clock.move_to(CLOCK_START + timedelta(minutes=30))
    now = timezone.now()
    # Enough old rows that a planner weighing costs would not scan the table for a day's worth.
    CompletedTask.objects.bulk_create(
        CompletedTask(
            task_id=index,
            task_name=NAME,
            task_hash="0" * 40,
            status=("succeeded", "failed", "cancelled")[index % 3],
            finished_at=now - timedelta(days=2, minutes=index),
        )
        for index in range(3000)
    )
    populate(now)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {HISTORY_TABLE}")
            # A tiny table is cheaper to scan than to search: ask for the plan the index allows.
            cursor.execute("SET enable_seqscan = off")
        elif connection.vendor == "mysql":
            cursor.execute(f"ANALYZE TABLE {HISTORY_TABLE}")
            cursor.fetchall()
        else:
            cursor.execute("ANALYZE")

    try:
        # The check can tell: a filter on a column no index covers is a full scan.
        assert _full_scans(f"SELECT COUNT(*) FROM {HISTORY_TABLE} WHERE worker = 'x'") != []
        for sql in set(_history_queries(client)):
            assert _full_scans(sql) == [], sql
    finally:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("RESET enable_seqscan")
