"""When a task runs: ``schedule=`` at the call site, and repeating series (``repeat=``).

The clock is frozen with time-machine and moved by hand; due tasks run in process with
``run_tasks``. Worker-side maths (``next_repeat``) is unit-tested in test_timing.py;
these tests drive it end to end through enqueue, claim, run and archive.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import time_machine
from dateutil.relativedelta import relativedelta
from django.test import override_settings
from django.utils import timezone as dj_timezone

from background_tasks import background, registry
from background_tasks.claims import claim_tasks
from background_tasks.execution import execute
from background_tasks.models import CompletedTask, Task
from background_tasks.operations import cancel_waiting, request_cancel
from background_tasks.outcomes import Outcome
from background_tasks.task_function import TaskFunction
from background_tasks.testing import run_tasks
from tests.fixtures import CLOCK_START
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
T0 = CLOCK_START  # where the shared ``clock`` fixture freezes time
HOUR = timedelta(hours=1)
Clock = time_machine.Traveller


def run_due_at(clock: Clock, at: datetime) -> int:
    """Move the clock to ``at`` and run every task due then, like a worker would."""
    clock.move_to(at)
    return run_tasks(now=at)


def pending() -> list[Task]:
    return list(Task.objects.order_by("run_at", "id"))


def only_pending() -> Task:
    rows = pending()
    assert len(rows) == 1, f"expected one pending task, found {rows}"
    return rows[0]


# -- schedule= ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        pytest.param(90, T0 + timedelta(seconds=90), id="int-seconds"),
        pytest.param(1.5, T0 + timedelta(seconds=1.5), id="float-seconds"),
        pytest.param(timedelta(minutes=5), T0 + timedelta(minutes=5), id="timedelta"),
        pytest.param(
            datetime(2026, 3, 10, 15, 30, tzinfo=BERLIN),
            datetime(2026, 3, 10, 14, 30, tzinfo=UTC),
            id="aware-datetime-other-zone",
        ),
        pytest.param(
            datetime(2026, 3, 11, 8, 0, tzinfo=UTC),
            datetime(2026, 3, 11, 8, 0, tzinfo=UTC),
            id="aware-utc",
        ),
    ],
)
def test_schedule__accepted_forms_set_the_run_time(
    clock: Clock, schedule: object, expected: datetime
) -> None:
    task = tasks.record("s", schedule=schedule)

    stored = Task.objects.get(pk=task.pk)
    assert stored.run_at == expected
    assert stored.scheduled_at == expected
    assert run_tasks() == 0
    assert run_due_at(clock, expected) == 1
    assert TaskRun.objects.filter(key="s").count() == 1


def test_schedule__a_naive_datetime_is_wall_clock_time_in_the_current_time_zone(
    clock: Clock,
) -> None:
    with dj_timezone.override(NEW_YORK):
        task = tasks.record("naive", schedule=datetime(2026, 3, 10, 12, 0))

    # New York is on EDT (UTC-4) since 8 March 2026.
    assert Task.objects.get(pk=task.pk).run_at == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)


@override_settings(TIME_ZONE="Europe/Berlin")
def test_schedule__a_naive_datetime_without_override_uses_the_time_zone_setting(
    clock: Clock,
) -> None:
    task = tasks.record("naive", schedule=datetime(2026, 3, 10, 15, 0))

    assert Task.objects.get(pk=task.pk).run_at == datetime(2026, 3, 10, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param(-60, id="negative-seconds"),
        pytest.param(-0.5, id="negative-float"),
        pytest.param(timedelta(days=-3), id="negative-timedelta"),
        pytest.param(datetime(2001, 1, 1, tzinfo=UTC), id="past-aware"),
        pytest.param(datetime(2026, 3, 10, 11, 59), id="past-naive"),
        pytest.param(0, id="zero"),
    ],
)
def test_schedule__a_time_in_the_past_runs_now(clock: Clock, schedule: object) -> None:
    tasks.record("past", schedule=schedule)

    assert run_tasks() == 1
    assert TaskRun.objects.filter(key="past").count() == 1


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param("soon", id="string"),
        pytest.param(True, id="bool"),
        pytest.param(date(2026, 3, 11), id="date"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param(1e300, id="out-of-range"),
        pytest.param([60], id="list"),
    ],
)
def test_schedule__an_unusable_value_raises_at_the_call_and_writes_no_row(schedule: object) -> None:
    with pytest.raises((TypeError, ValueError)) as error:
        tasks.record("bad", schedule=schedule)

    assert repr(schedule) in str(error.value)
    assert not Task.objects.exists()


def test_schedule__an_unusable_value_does_not_remove_the_existing_duplicate() -> None:
    existing = tasks.record("dup")

    with pytest.raises(TypeError):
        tasks.record("dup", schedule="soon", remove_existing_tasks=True)

    assert [t.pk for t in pending()] == [existing.pk]


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param("x", id="string"),
        pytest.param(True, id="bool"),
        pytest.param(date(2026, 3, 11), id="date"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
    ],
)
def test_schedule__an_unusable_decorator_default_fails_at_decoration(schedule: object) -> None:
    name = "tests.bad_default_schedule"
    try:
        with pytest.raises((TypeError, ValueError)):

            @background(name=name, schedule=schedule)
            def bad_default(key: str) -> None: ...

        assert name not in registry
    finally:
        registry.unregister(name)


# -- repeat=: the django-background-tasks forms ---------------------------------------------------


@pytest.mark.parametrize(
    ("repeat", "step"),
    [
        pytest.param(Task.HOURLY, timedelta(hours=1), id="HOURLY"),
        pytest.param(Task.DAILY, timedelta(days=1), id="DAILY"),
        pytest.param(Task.WEEKLY, timedelta(weeks=1), id="WEEKLY"),
        pytest.param(Task.EVERY_2_WEEKS, timedelta(weeks=2), id="EVERY_2_WEEKS"),
        pytest.param(Task.EVERY_4_WEEKS, timedelta(weeks=4), id="EVERY_4_WEEKS"),
        pytest.param(90, timedelta(seconds=90), id="int-seconds"),
        pytest.param(0.25, timedelta(milliseconds=250), id="float-seconds"),
        pytest.param(timedelta(minutes=90), timedelta(minutes=90), id="timedelta"),
        pytest.param(relativedelta(hours=2), timedelta(hours=2), id="relativedelta-clock"),
        pytest.param(relativedelta(weeks=1), timedelta(weeks=1), id="relativedelta-weeks"),
    ],
)
def test_repeat__each_run_enqueues_the_next_one_step_later(
    clock: Clock, repeat: object, step: timedelta
) -> None:
    tasks.record("r", repeat=repeat)

    for n in range(1, 4):
        assert run_due_at(clock, T0 + (n - 1) * step) == 1
        assert only_pending().scheduled_at == T0 + n * step

    assert TaskRun.objects.filter(key="r").count() == 3
    assert CompletedTask.objects.succeeded().count() == 3


def test_repeat__constants_match_django_background_tasks() -> None:
    assert (Task.HOURLY, Task.DAILY, Task.WEEKLY) == (3600, 86400, 604800)
    assert (Task.EVERY_2_WEEKS, Task.EVERY_4_WEEKS, Task.NEVER) == (1209600, 2419200, 0)


@pytest.mark.parametrize("repeat", [Task.NEVER, None], ids=["NEVER", "None"])
def test_repeat__never_runs_once(clock: Clock, repeat: object) -> None:
    tasks.record("once", repeat=repeat)

    assert run_tasks() == 1

    assert not Task.objects.exists()


@pytest.mark.parametrize(
    "repeat",
    [
        pytest.param("hourly", id="string"),
        pytest.param(True, id="bool"),
        pytest.param(-60, id="negative"),
        pytest.param(math.nan, id="nan"),
        pytest.param(timedelta(0), id="zero-timedelta"),
        pytest.param(relativedelta(months=-1), id="negative-relativedelta"),
        pytest.param(relativedelta(day=31), id="absolute-relativedelta"),
    ],
)
def test_repeat__an_unusable_step_raises_at_the_call_and_writes_no_row(repeat: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        tasks.record("bad", repeat=repeat)

    assert not Task.objects.exists()


def test_repeat_until__a_value_that_is_not_a_datetime_raises_and_writes_no_row() -> None:
    with pytest.raises(TypeError, match="repeat_until"):
        tasks.record("bad", repeat=Task.HOURLY, repeat_until="tomorrow")

    assert not Task.objects.exists()


# -- the grid: no drift, no burst -----------------------------------------------------------------


def test_repeat__a_run_that_starts_late_does_not_shift_the_series(clock: Clock) -> None:
    tasks.record("late", repeat=Task.HOURLY)

    assert run_due_at(clock, T0 + timedelta(minutes=10)) == 1

    assert only_pending().scheduled_at == T0 + HOUR


def test_repeat__a_run_that_finishes_late_does_not_shift_the_series(clock: Clock) -> None:
    tasks.record("slow", repeat=Task.HOURLY)
    [claimed] = claim_tasks("slow-worker", [], 1, now=T0)

    clock.move_to(T0 + timedelta(minutes=50))  # the body took 50 minutes
    assert execute(claimed, "slow-worker") is Outcome.SUCCEEDED

    assert only_pending().scheduled_at == T0 + HOUR


def test_repeat__a_run_longer_than_the_step_skips_to_the_next_slot_on_the_grid(
    clock: Clock,
) -> None:
    tasks.record("overlong", repeat=Task.HOURLY)
    [claimed] = claim_tasks("slow-worker", [], 1, now=T0)

    clock.move_to(T0 + timedelta(minutes=80))
    execute(claimed, "slow-worker")

    assert only_pending().scheduled_at == T0 + 2 * HOUR


def test_repeat__after_downtime_runs_once_then_returns_to_the_grid(clock: Clock) -> None:
    tasks.record("down", repeat=Task.HOURLY)

    # No worker ran for five and a half hours: one run, not six.
    assert run_due_at(clock, T0 + timedelta(hours=5, minutes=30)) == 1
    assert only_pending().scheduled_at == T0 + 6 * HOUR

    assert run_due_at(clock, T0 + 6 * HOUR) == 1
    assert only_pending().scheduled_at == T0 + 7 * HOUR
    assert TaskRun.objects.filter(key="down").count() == 2


def test_repeat__retries_of_one_run_do_not_shift_the_series(clock: Clock) -> None:
    tasks.flaky("flaky", failures=2, repeat=Task.HOURLY)

    assert run_due_at(clock, T0) == 1
    retry = only_pending()
    assert retry.run_at == T0 + timedelta(minutes=5)  # the task's backoff
    assert retry.scheduled_at == T0
    assert run_due_at(clock, T0 + timedelta(minutes=5)) == 1
    assert run_due_at(clock, T0 + timedelta(minutes=10)) == 1  # third attempt succeeds

    follower = only_pending()
    assert follower.scheduled_at == follower.run_at == T0 + HOUR
    assert (follower.attempts, follower.last_error) == (0, "")
    assert CompletedTask.objects.get().status == CompletedTask.Status.SUCCEEDED


@pytest.mark.parametrize(
    "task", [tasks.always_fails, tasks.fails_permanently], ids=["retries-exhausted", "permanent"]
)
def test_repeat__a_run_that_gives_up_still_schedules_the_next_occurrence(
    clock: Clock, task: TaskFunction[[], None]
) -> None:
    task(repeat=Task.HOURLY)

    run_due_at(clock, T0 + timedelta(minutes=1))

    assert CompletedTask.objects.get().status == CompletedTask.Status.FAILED
    follower = only_pending()
    assert follower.scheduled_at == T0 + HOUR
    assert (follower.attempts, follower.last_error) == (0, "")


@override_settings(BACKGROUND_TASKS_REPEAT_AFTER_FAILURE=False)
def test_repeat__a_run_that_gives_up_ends_the_series_when_repeat_after_failure_is_off(
    clock: Clock,
) -> None:
    tasks.always_fails(repeat=Task.HOURLY)

    run_due_at(clock, T0)

    assert CompletedTask.objects.get().status == CompletedTask.Status.FAILED
    assert not Task.objects.exists()


# -- calendar steps -------------------------------------------------------------------------------


def test_repeat__monthly_from_the_31st_lands_on_each_month_end(clock: Clock) -> None:
    first = datetime(2027, 12, 31, 9, 0, tzinfo=UTC)
    clock.move_to(first - HOUR)
    tasks.record("month-end", schedule=first, repeat=relativedelta(months=1))

    seen = []
    for _ in range(6):
        due = only_pending().scheduled_at
        assert due is not None
        seen.append(due)
        assert run_due_at(clock, due) == 1

    assert [d.date() for d in seen] == [
        date(2027, 12, 31),
        date(2028, 1, 31),
        date(2028, 2, 29),
        date(2028, 3, 31),
        date(2028, 4, 30),
        date(2028, 5, 31),
    ]
    assert {d.time() for d in seen} == {first.time()}


@override_settings(TIME_ZONE="Europe/Berlin")
def test_repeat__calendar_days_keep_the_wall_clock_and_daily_seconds_stay_24_hours_across_dst(
    clock: Clock,
) -> None:
    nine_am = datetime(2026, 3, 28, 9, 0, tzinfo=BERLIN)  # the day before clocks go forward
    clock.move_to(nine_am - HOUR)
    tasks.record("calendar", schedule=nine_am, repeat=relativedelta(days=1))
    tasks.record("exact", schedule=nine_am, repeat=Task.DAILY)

    run_due_at(clock, nine_am)

    followers = {t.params["args"][0]: t.scheduled_at for t in pending()}
    assert followers["calendar"] == datetime(2026, 3, 29, 9, 0, tzinfo=BERLIN)
    assert followers["exact"] == datetime(2026, 3, 29, 10, 0, tzinfo=BERLIN)


# -- ending a series ------------------------------------------------------------------------------


def test_repeat_until__the_series_stops_after_the_last_occurrence_on_or_before_it(
    clock: Clock,
) -> None:
    tasks.record("bounded", repeat=Task.HOURLY, repeat_until=T0 + 2 * HOUR)

    for n in range(3):
        assert run_due_at(clock, T0 + n * HOUR) == 1

    assert not Task.objects.exists()
    assert sorted(CompletedTask.objects.values_list("run_at", flat=True)) == [
        T0,
        T0 + HOUR,
        T0 + 2 * HOUR,
    ]


def test_repeat_until__a_naive_datetime_is_read_in_the_current_time_zone(clock: Clock) -> None:
    with dj_timezone.override(BERLIN):
        task = tasks.record(
            "bounded", repeat=Task.HOURLY, repeat_until=datetime(2026, 3, 10, 14, 0)
        )

    assert Task.objects.get(pk=task.pk).repeat_until == datetime(2026, 3, 10, 13, 0, tzinfo=UTC)
    run_due_at(clock, T0)
    assert only_pending().scheduled_at == T0 + HOUR
    run_due_at(clock, T0 + HOUR)
    assert not Task.objects.exists()


def test_cancel__cancelling_a_waiting_repeating_task_ends_the_series(clock: Clock) -> None:
    tasks.record("cancel-me", repeat=Task.HOURLY)
    run_due_at(clock, T0)
    follower = only_pending()

    assert cancel_waiting([follower.pk]) == (1, 0)

    assert not Task.objects.exists()
    assert CompletedTask.objects.get(task_id=follower.pk).status == CompletedTask.Status.CANCELLED
    assert run_due_at(clock, T0 + 2 * HOUR) == 0


def test_cancel__a_repeating_task_cancelled_while_running_ends_the_series(clock: Clock) -> None:
    tasks.sleeps(30, key="cancel-running", repeat=Task.HOURLY)
    [claimed] = claim_tasks("busy-worker", [], 1, now=T0)

    assert request_cancel([claimed.pk]) == 1
    assert execute(claimed, "busy-worker") is Outcome.CANCELLED

    assert not Task.objects.exists()
    assert CompletedTask.objects.get().status == CompletedTask.Status.CANCELLED


def test_cancel__a_repeating_task_that_cancels_itself_ends_the_series(clock: Clock) -> None:
    tasks.cancels_itself(repeat=Task.HOURLY)

    assert run_due_at(clock, T0) == 1

    assert not Task.objects.exists()
    assert CompletedTask.objects.get().status == CompletedTask.Status.CANCELLED
