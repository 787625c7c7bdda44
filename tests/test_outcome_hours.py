"""The dashboard's hourly summary: each closed hour counted once, by whoever comes first, kept
for the day chart whatever retention does to the rows, and pruned after two days."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import DatabaseError, connection, connections
from django.db.models import QuerySet
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from background_tasks import outcome_hours, overview, retention
from background_tasks.models import CompletedTask, OutcomeHour
from background_tasks.worker import Worker
from tests.fixtures import CLOCK_START, Clock
from tests.testapp import tasks

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


def outcome(status: str, finished_at: datetime, count: int = 1) -> None:
    CompletedTask.objects.bulk_create(
        CompletedTask(task_id=index, task_name="tests.history", status=status, finished_at=at)
        for index, at in enumerate([finished_at] * count)
    )


def counts(row: OutcomeHour) -> tuple[int, int, int]:
    return (row.succeeded, row.failed, row.cancelled)


@pytest.fixture
def now(clock: Clock) -> datetime:
    """Twenty minutes into an hour: the hour before has closed."""
    clock.move_to(CLOCK_START + timedelta(minutes=20))
    return timezone.now()


# -- closing and counting -----------------------------------------------------------------------


def test_is_closed__only_once_the_settle_delay_after_the_hours_end_has_passed(
    now: datetime,
) -> None:
    hour = outcome_hours.hour_of(now) - HOUR
    end = hour + HOUR

    assert not outcome_hours.is_closed(hour, end)
    assert not outcome_hours.is_closed(hour, end + outcome_hours.SETTLE - timedelta(seconds=1))
    assert outcome_hours.is_closed(hour, end + outcome_hours.SETTLE)
    assert outcome_hours.window(now)[-1] == outcome_hours.hour_of(now)
    assert len(outcome_hours.window(now)) == 24


def test_summarise__counts_a_closed_hour_once_then_reads_the_stored_row(now: datetime) -> None:
    hour = outcome_hours.hour_of(now) - 2 * HOUR
    outcome("succeeded", hour, count=3)  # the hour's first instant is in it
    outcome("failed", hour + timedelta(minutes=59, seconds=59))
    outcome("cancelled", hour + timedelta(minutes=30), count=2)
    outcome("succeeded", hour + HOUR)  # the next hour's first instant is not
    outcome("succeeded", hour - timedelta(microseconds=1))

    first = outcome_hours.summarise([hour])
    with CaptureQueriesContext(connection) as again:
        second = outcome_hours.summarise([hour])

    assert counts(first[hour]) == (3, 1, 2)
    assert counts(second[hour]) == (3, 1, 2)
    assert [counts(row) for row in OutcomeHour.objects.all()] == [(3, 1, 2)]
    assert len(again) == 1  # the stored row, nothing counted
    assert CompletedTask._meta.db_table not in again[0]["sql"]


def test_summarise__stores_an_empty_hour_too_so_that_it_is_not_counted_again(
    now: datetime,
) -> None:
    hour = outcome_hours.hour_of(now) - 3 * HOUR

    outcome_hours.summarise([hour])
    with CaptureQueriesContext(connection) as again:
        outcome_hours.summarise([hour])

    assert counts(OutcomeHour.objects.get(hour=hour)) == (0, 0, 0)
    assert len(again) == 1


def test_summarise__counts_at_most_limit_missing_hours_the_latest_first(now: datetime) -> None:
    hours = outcome_hours.window(now)[:-1]

    known = outcome_hours.summarise(hours, limit=4)

    assert sorted(known) == hours[-4:]
    assert OutcomeHour.objects.count() == 4


def test_summarise__an_hour_another_process_stored_first_is_kept_as_it_is(now: datetime) -> None:
    hour = outcome_hours.hour_of(now) - 2 * HOUR
    outcome("succeeded", hour + timedelta(minutes=1), count=2)
    # As if another process counted the hour between our read and our insert.
    real_count = outcome_hours.count_hour

    def count_while_another_stores(at: datetime) -> OutcomeHour:
        OutcomeHour.objects.create(hour=at, succeeded=2)
        return real_count(at)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outcome_hours, "count_hour", count_while_another_stores)
        known = outcome_hours.summarise([hour])

    assert counts(known[hour]) == (2, 0, 0)
    assert OutcomeHour.objects.filter(hour=hour).count() == 1


def test_summarise__a_count_it_cannot_store_is_logged_and_still_returned(
    now: datetime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hour = outcome_hours.hour_of(now) - 2 * HOUR
    outcome("failed", hour + timedelta(minutes=1))

    def read_only(*args: Any, **kwargs: Any) -> None:
        # A real failed statement: on PostgreSQL it aborts the transaction it runs in.
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO no_such_table_for_outcome_hours VALUES (1)")

    monkeypatch.setattr(QuerySet, "bulk_create", read_only)
    known = outcome_hours.summarise([hour])

    assert counts(known[hour]) == (0, 1, 0)
    assert "event=outcome_hours_not_stored hours=1" in caplog.text
    assert not OutcomeHour.objects.exists()  # the connection is still usable


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_summarise__two_processes_filling_the_same_hours_at_once_store_each_hour_once(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    clock.move_to(CLOCK_START + timedelta(minutes=20))
    now = timezone.now()
    hours = [hour for hour in outcome_hours.window(now) if outcome_hours.is_closed(hour, now)]
    for index, hour in enumerate(hours):
        outcome("succeeded", hour + timedelta(minutes=10), count=index % 3)
    outcome("failed", hours[-1] + timedelta(minutes=59))
    # Both count every hour before either inserts: the inserts then collide on every hour.
    both_counted = threading.Barrier(2, timeout=30)
    real_store = outcome_hours._store

    def store_after_both_counted(rows: list[OutcomeHour]) -> None:
        both_counted.wait()
        real_store(rows)

    results: list[dict[datetime, OutcomeHour]] = []
    errors: list[BaseException] = []

    def fill() -> None:
        try:
            results.append(outcome_hours.summarise(hours))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outcome_hours, "_store", store_after_both_counted)
        threads = [threading.Thread(target=fill) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    assert errors == []
    assert "outcome_hours_not_stored" not in caplog.text
    stored = {row.hour: counts(row) for row in OutcomeHour.objects.all()}
    expected = {hour: (index % 3, 0, 0) for index, hour in enumerate(hours)}
    expected[hours[-1]] = (len(hours) - 1) % 3, 1, 0
    assert stored == expected
    for result in results:
        assert {hour: counts(row) for hour, row in result.items()} == expected


# -- late rows ----------------------------------------------------------------------------------


def test_outcome_charts__a_row_committed_just_after_its_hour_ended_is_counted(
    clock: Clock,
) -> None:
    # The task finished a tenth of a second before the hour ended; its row was committed
    # 0.2 s after.
    clock.move_to(CLOCK_START - timedelta(milliseconds=100))
    finished = timezone.now()
    clock.move_to(CLOCK_START + timedelta(milliseconds=200))
    outcome("succeeded", finished)
    hour = outcome_hours.hour_of(finished)

    # Within the settle delay the hour is not closed: a page load counts it live.
    during = overview.outcome_charts(timezone.now()).hours
    assert [b.succeeded for b in during if b.start == hour] == [1]
    assert not OutcomeHour.objects.filter(hour=hour).exists()

    # Once it has passed, the hour is closed and counted, the late row with it.
    clock.move_to(CLOCK_START + outcome_hours.SETTLE)
    after = overview.outcome_charts(timezone.now()).hours

    assert [b.succeeded for b in after if b.start == hour] == [1]
    assert counts(OutcomeHour.objects.get(hour=hour)) == (1, 0, 0)


def test_outcome_charts__a_row_recorded_after_its_hour_was_counted_is_not_counted(
    now: datetime,
) -> None:
    hour = outcome_hours.hour_of(now) - 2 * HOUR
    outcome("failed", hour + timedelta(minutes=5))
    overview.outcome_charts(now)
    outcome("failed", hour + timedelta(minutes=6))  # e.g. a worker's clock far behind

    buckets = {b.start: b for b in overview.outcome_charts(now).hours}

    assert buckets[hour].failed == 1
    assert CompletedTask.objects.failed().filter(finished_at__gte=hour).count() == 2


# -- what the charts show -----------------------------------------------------------------------


def test_outcome_charts__closed_hours_from_the_summary_open_ones_counted_live(
    clock: Clock,
) -> None:
    # Two minutes into an hour: the hour before is still within its settle delay.
    clock.move_to(CLOCK_START + timedelta(minutes=2))
    now = timezone.now()
    this_hour = outcome_hours.hour_of(now)
    last_hour = this_hour - HOUR
    older = this_hour - 5 * HOUR
    outcome("succeeded", this_hour + timedelta(minutes=1), count=2)
    outcome("failed", this_hour + timedelta(seconds=5))
    outcome("succeeded", last_hour + timedelta(minutes=2), count=4)  # before the minute chart
    outcome("failed", last_hour + timedelta(minutes=59))
    outcome("cancelled", last_hour + timedelta(minutes=10))  # in no chart
    # A summary row that differs from the history: the chart must read it, not count again.
    OutcomeHour.objects.create(hour=older, succeeded=7, failed=3)
    outcome("succeeded", older + timedelta(minutes=1))

    charts = overview.outcome_charts(now)

    hours = {b.start: (b.succeeded, b.failed) for b in charts.hours}
    assert hours[this_hour] == (2, 1)
    assert hours[last_hour] == (4, 1)
    assert hours[older] == (7, 3)
    assert sum(s + f for s, f in hours.values()) == 2 + 1 + 4 + 1 + 7 + 3
    assert not OutcomeHour.objects.filter(hour__in=[this_hour, last_hour]).exists()
    minutes = {b.start: (b.succeeded, b.failed) for b in charts.minutes}
    assert minutes[this_hour] == (0, 1)
    assert minutes[this_hour + timedelta(minutes=1)] == (2, 0)
    assert minutes[last_hour + timedelta(minutes=59)] == (0, 1)
    assert min(minutes) == last_hour + timedelta(minutes=3)  # the last 60 minutes
    assert sum(s + f for s, f in minutes.values()) == 4


def test_dashboard__the_day_chart_shows_summarised_and_live_hours(
    admin_client: Any, now: datetime
) -> None:
    hour = outcome_hours.hour_of(now)
    outcome("succeeded", hour - 3 * HOUR + timedelta(minutes=1), count=5)
    outcome("failed", hour + timedelta(minutes=1), count=2)

    content = admin_client.get("/admin/background_tasks/task/dashboard/").content.decode()

    assert ": 5 succeeded, 0 failed</title>" in content
    assert ": 0 succeeded, 2 failed</title>" in content
    assert OutcomeHour.objects.filter(succeeded=5).count() == 1


# -- the workers' passes and retention ---------------------------------------------------------


def test_keep_up__counts_a_few_missing_hours_per_call_and_deletes_rows_older_than_two_days(
    now: datetime,
) -> None:
    stale = outcome_hours.hour_of(now) - outcome_hours.KEEP - HOUR
    OutcomeHour.objects.create(hour=stale)
    kept = OutcomeHour.objects.create(hour=outcome_hours.hour_of(now) - outcome_hours.KEEP)

    missing = outcome_hours.keep_up(now)

    closed = 23  # twenty minutes into the hour: every earlier hour of the day has closed
    assert missing == closed - outcome_hours.HOURS_PER_PASS
    assert not OutcomeHour.objects.filter(hour=stale).exists()
    assert OutcomeHour.objects.filter(pk=kept.pk).exists()
    assert OutcomeHour.objects.count() == 1 + outcome_hours.HOURS_PER_PASS
    for _ in range(10):
        missing = outcome_hours.keep_up(now)
    assert missing == 0
    assert OutcomeHour.objects.count() == 1 + closed


@override_settings(BACKGROUND_TASKS_RETAIN_SUCCEEDED_DAYS=0.01)  # about 14 minutes
def test_pruning_pass__counts_an_hour_before_deleting_its_rows_and_the_count_stays(
    now: datetime,
) -> None:
    hour = outcome_hours.hour_of(now) - 2 * HOUR
    outcome("succeeded", hour + timedelta(minutes=30), count=6)

    deleted = retention.prune_expired(now)
    charts = overview.outcome_charts(now)

    assert deleted["succeeded"] == 6
    assert not CompletedTask.objects.exists()
    assert counts(OutcomeHour.objects.get(hour=hour)) == (6, 0, 0)
    assert [b.succeeded for b in charts.hours if b.start == hour] == [6]


def test_pruning_pass__goes_on_when_the_summary_fails(
    now: datetime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    outcome("succeeded", now - timedelta(days=8))

    def broken(at: datetime) -> int:
        raise DatabaseError("gone")

    monkeypatch.setattr(outcome_hours, "keep_up", broken)
    deleted = retention.prune_expired(now)

    assert deleted["succeeded"] == 1
    assert "event=outcome_hours_error" in caplog.text


@pytest.mark.django_db(transaction=True)
@override_settings(BACKGROUND_TASKS_PRUNE_INTERVAL=1.0)
def test_worker__its_pruning_passes_count_the_closed_hours_of_the_day() -> None:
    now = timezone.now()
    hour = outcome_hours.hour_of(now) - 2 * HOUR
    outcome("failed", hour + timedelta(minutes=7), count=3)
    for key in "abcdef":
        tasks.record(key)
    ticks = iter(range(0, 10_000))

    # Every reading of this clock is a second later: each loop turn finds a pass due.
    Worker(burst=True, sleep=0.01, clock=lambda: float(next(ticks))).run()

    assert counts(OutcomeHour.objects.get(hour=hour)) == (0, 3, 0)
    assert OutcomeHour.objects.count() >= outcome_hours.HOURS_PER_PASS
