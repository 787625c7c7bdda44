"""The main paths with ``USE_TZ = True`` and with ``USE_TZ = False`` (``tests/settings_naive.py``).

This module runs in both legs: under the default settings and with
``pytest --ds=tests.settings_naive`` (naive datetimes, wall-clock time in a zone with DST, far
from UTC). Each test states its expectation as instants (``aware()``), so the same assertion
holds in both, and checks that the columns hold what Django hands out (naive without USE_TZ).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from background_tasks import health, periodic
from background_tasks.liveness import register, rescue_lost
from background_tasks.models import CompletedTask, Schedule, Task, Worker
from background_tasks.testing import run_tasks
from background_tasks.timezones import aware, to_db
from tests.helpers import start_worker
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db


def stored_like_django(value: datetime | None) -> bool:
    """A datetime read back from a column is aware exactly when USE_TZ is on."""
    return value is not None and timezone.is_aware(value) == settings.USE_TZ


def local_wall_time(**fields: int) -> datetime:
    """A naive wall-clock time, as projects without USE_TZ write them."""
    return datetime(2030, 7, 1, **fields)


def test_settings__the_leg_runs_with_the_settings_it_names() -> None:
    # Guards the CI leg: the naive leg must really run without USE_TZ.
    expected = settings.SETTINGS_MODULE != "tests.settings_naive"
    assert settings.USE_TZ is expected


def test_enqueue__a_plain_call_is_ready_now() -> None:
    before = aware(timezone.now())
    task = tasks.send_newsletter(42)
    task.refresh_from_db()

    assert stored_like_django(task.run_at)
    assert before <= aware(task.run_at) <= aware(timezone.now())
    assert task.status == "ready"


def test_enqueue__seconds_and_timedeltas_count_from_now() -> None:
    before = aware(timezone.now())
    in_a_minute = tasks.send_newsletter(1, schedule=60)
    in_an_hour = tasks.send_newsletter(2, schedule=timedelta(hours=1))

    for task, delay in ((in_a_minute, 60), (in_an_hour, 3600)):
        task.refresh_from_db()
        assert stored_like_django(task.run_at)
        assert timedelta(0) <= aware(task.run_at) - before - timedelta(seconds=delay)
        assert aware(task.run_at) - before - timedelta(seconds=delay) < timedelta(seconds=5)


def test_enqueue__a_naive_datetime_is_wall_clock_time_in_the_time_zone() -> None:
    task = tasks.send_newsletter(1, schedule=local_wall_time(hour=9, minute=30))
    task.refresh_from_db()

    zone = timezone.get_current_timezone()
    assert aware(task.run_at) == local_wall_time(hour=9, minute=30).replace(tzinfo=zone)
    if not settings.USE_TZ:
        assert task.run_at == local_wall_time(hour=9, minute=30)  # the column holds it as given


def test_enqueue__an_aware_datetime_is_that_instant() -> None:
    instant = datetime(2030, 1, 15, 12, 0, tzinfo=dt_timezone.utc)
    task = tasks.send_newsletter(1, schedule=instant, repeat_until=instant + timedelta(days=1))
    task.refresh_from_db()

    assert aware(task.run_at) == instant
    assert task.repeat_until is not None
    assert aware(task.repeat_until) == instant + timedelta(days=1)
    assert stored_like_django(task.repeat_until)


def test_worker__runs_a_ready_task_and_records_times_in_the_columns_form() -> None:
    task = tasks.send_newsletter(7)

    assert run_tasks() == 1

    record = CompletedTask.objects.get(task_id=task.pk)
    assert record.status == "succeeded"
    assert stored_like_django(record.finished_at)
    assert stored_like_django(record.started_at)
    assert record.duration is not None and record.duration >= 0


def test_retry__is_scheduled_after_the_backoff() -> None:
    task = tasks.flaky("tz-retry", 1)  # fails once; retries wait 300 s
    before = aware(timezone.now())

    run_tasks()

    task.refresh_from_db()
    assert task.attempts == 1
    assert stored_like_django(task.run_at)
    assert timedelta(seconds=290) < aware(task.run_at) - before < timedelta(seconds=320)


def test_repeat__the_next_occurrence_is_one_step_after_the_last() -> None:
    first = tasks.send_newsletter(3, repeat=Task.HOURLY, schedule=-1)
    first.refresh_from_db()

    run_tasks()

    follower = Task.objects.get(task_name=tasks.send_newsletter.name)
    assert follower.pk != first.pk
    assert stored_like_django(follower.run_at)
    assert aware(follower.run_at) - aware(first.run_at) == timedelta(hours=1)
    assert follower.repeat == Task.HOURLY


def test_cron__ticks_are_wall_clock_times_of_the_time_zone_and_fire_once() -> None:
    now = timezone.now()
    periodic.sync_schedules(now)
    schedule = Schedule.objects.get(name="tests.nightly_report")  # "0 3 * * *", TIME_ZONE

    tick = schedule.next_fire_at
    assert stored_like_django(tick)
    assert tick is not None
    local = aware(tick).astimezone(timezone.get_default_timezone())
    assert (local.hour, local.minute) == (3, 0)
    assert timedelta(0) < aware(tick) - aware(now) <= timedelta(days=1)

    assert periodic.fire_due(tick + timedelta(seconds=1)) == 1
    assert periodic.fire_due(tick + timedelta(seconds=2)) == 0
    fired = Task.objects.get(task_name="tests.nightly_report")
    assert aware(fired.run_at) == aware(tick)
    schedule.refresh_from_db()
    assert schedule.next_fire_at is not None
    assert aware(schedule.next_fire_at) - aware(tick) == timedelta(days=1) or (
        # a DST change in between moves the next 03:00 by an hour
        abs(aware(schedule.next_fire_at) - aware(tick) - timedelta(days=1)) == timedelta(hours=1)
    )


def test_rescue__releases_the_task_of_a_worker_whose_heartbeat_stopped() -> None:
    task = tasks.send_newsletter(9)
    register("tests:lost", [], 1)
    stale = timezone.now() - timedelta(minutes=10)
    Worker.objects.filter(id="tests:lost").update(last_heartbeat_at=stale)
    Task.objects.filter(pk=task.pk).update(locked_by="tests:lost", locked_at=stale)

    assert rescue_lost() == 1

    task.refresh_from_db()
    assert task.locked_by is None
    assert "tests:lost" in task.last_error


def test_admin__pages_and_run_now_work(admin_client: Client) -> None:
    scheduled = tasks.send_newsletter(5, schedule=3600)
    periodic.sync_schedules(timezone.now())
    run_tasks()  # nothing is ready yet
    failed = tasks.always_fails()
    run_tasks()

    for model in ("task", "completedtask", "schedule", "worker"):
        response = admin_client.get(reverse(f"admin:background_tasks_{model}_changelist"))
        assert response.status_code == 200, model
    for model, pk in (("task", scheduled.pk), ("schedule", Schedule.objects.get().pk)):
        url = reverse(f"admin:background_tasks_{model}_change", args=[pk])
        assert admin_client.get(url).status_code == 200, model
    assert CompletedTask.objects.filter(task_id=failed.pk).exists()

    response = admin_client.post(
        reverse("admin:background_tasks_task_changelist"),
        {"action": "run_now", "_selected_action": [str(scheduled.pk)]},
        follow=True,
    )

    assert response.status_code == 200
    scheduled.refresh_from_db()
    assert stored_like_django(scheduled.run_at)
    assert aware(scheduled.run_at) <= aware(timezone.now())


def test_cli__lists_shows_stats_and_prunes() -> None:
    tasks.send_newsletter(11, schedule=3600)
    done = tasks.send_newsletter(12)
    run_tasks()
    CompletedTask.objects.filter(task_id=done.pk).update(
        finished_at=timezone.now() - timedelta(days=40)
    )

    out = StringIO()
    call_command("background_tasks", "list", stdout=out)
    assert "scheduled" in out.getvalue()
    call_command("background_tasks", "stats", stdout=out)
    call_command("background_tasks", "history", stdout=out)
    call_command("background_tasks", "prune", "--older-than", "30", stdout=out)

    assert not CompletedTask.objects.filter(task_id=done.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_real_worker__runs_what_is_due_and_leaves_what_is_scheduled() -> None:
    tasks.record("tz-now")
    tasks.record("tz-later", schedule=3600)

    proc = start_worker(["--burst"])
    _out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    assert list(TaskRun.objects.values_list("key", flat=True)) == ["tz-now"]
    assert Task.objects.get().params["args"] == ["tz-later"]


FALL_BACK = datetime(2030, 11, 3, 4, 0, tzinfo=dt_timezone.utc)  # 00:00 EDT, New York


def test_cron__an_hourly_schedule_fires_once_per_tick_through_a_repeated_hour() -> None:
    # New York's clocks go back at 06:00 UTC on 2030-11-03: 01:00-02:00 is shown twice.
    Schedule.objects.create(
        name="hourly-through-fall-back",
        task_name=tasks.no_arguments.name,
        cron="0 * * * *",
        time_zone="America/New_York",
        source=Schedule.Source.ADMIN,
        next_fire_at=to_db(FALL_BACK),
    )

    for minute in range(0, 4 * 60 + 1):
        instant = FALL_BACK + timedelta(minutes=minute, seconds=1)
        periodic.fire_due(to_db(instant))

    run_at = sorted(Task.objects.values_list("run_at", flat=True))
    if settings.USE_TZ:
        # Every tick once, the repeated 01:00 in both passes.
        assert run_at == [FALL_BACK + timedelta(hours=h) for h in range(5)]
    else:
        # Every wall-clock hour once: a naive column cannot tell the two 01:00 apart (nor does
        # PostgreSQL, which reads it as the second), so the second pass is not fired.
        assert run_at == [datetime(2030, 11, 3, h) for h in range(4)]


def test_repeat__an_hourly_series_runs_once_per_occurrence_through_a_repeated_hour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [FALL_BACK]
    monkeypatch.setattr(timezone, "now", lambda: to_db(clock[0]))
    tasks.send_newsletter(4, repeat=Task.HOURLY, schedule=FALL_BACK)

    ran = 0
    for minute in range(0, 4 * 60 + 1):
        clock[0] = FALL_BACK + timedelta(minutes=minute, seconds=1)
        ran += run_tasks(now=to_db(clock[0]), max_tasks=5)  # a loop shows without running on

    runs = sorted(
        aware(at).astimezone(dt_timezone.utc)
        for at in CompletedTask.objects.values_list("run_at", flat=True)
    )
    assert len(runs) == len(set(runs)) == ran
    assert ran in (4, 5)


@pytest.mark.parametrize(
    "last_heartbeat",
    [
        datetime(2030, 3, 10, 6, 59, 55, tzinfo=dt_timezone.utc),  # 01:59:55, clocks go forward
        datetime(2030, 11, 3, 5, 59, 55, tzinfo=dt_timezone.utc),  # 01:59:55, clocks go back
    ],
)
def test_rescue__a_live_worker_is_not_taken_for_lost_when_the_clocks_change(
    last_heartbeat: datetime,
) -> None:
    # Ten seconds later, New York's wall clock shows 03:00:05 (spring) or 01:00:05 (autumn).
    now = last_heartbeat + timedelta(seconds=10)
    task = tasks.send_newsletter(10)
    register("tests:alive", [], 1)
    Worker.objects.filter(id="tests:alive").update(last_heartbeat_at=to_db(last_heartbeat))
    Task.objects.filter(pk=task.pk).update(locked_by="tests:alive", locked_at=to_db(last_heartbeat))

    assert rescue_lost(to_db(now)) == 0

    assert Task.objects.get(pk=task.pk).locked_by == "tests:alive"
    assert Worker.objects.filter(id="tests:alive").exists()


def test_health__a_heartbeat_just_before_clocks_go_forward_is_fresh_just_after() -> None:
    last_heartbeat = datetime(2030, 3, 10, 6, 59, 55, tzinfo=dt_timezone.utc)  # 01:59:55
    register("tests:alive", [], 1)
    Worker.objects.filter(id="tests:alive").update(last_heartbeat_at=to_db(last_heartbeat))

    result = health.check_workers(to_db(last_heartbeat + timedelta(seconds=10)), [], 60)

    assert result.ok, result
