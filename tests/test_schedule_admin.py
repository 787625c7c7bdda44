"""The schedules admin: lists, the add and change forms, actions and the permissions they need."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from background_tasks import periodic
from background_tasks.admin import ScheduleAdmin, run_schedule_now
from background_tasks.models import CompletedTask, Schedule, Task
from tests.fixtures import StaffLogin
from tests.test_admin import (
    NEWSLETTER,
    SCRIPT,
    action_names,
    admin_url,
    assert_escaped,
    listed,
    make_completed,
    make_task,
    messages_of,
    post_action,
)
from tests.testapp import tasks as test_tasks

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

pytestmark = pytest.mark.django_db

UTC = timezone.utc
NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)
RECORD = "tests.testapp.tasks.record"


@pytest.fixture
def clock_start() -> datetime:
    return NOW


def make_schedule(**fields: Any) -> Schedule:
    values: dict[str, Any] = {
        "name": "newsletter",
        "task_name": NEWSLETTER,
        "params": {"args": [7], "kwargs": {"template": "daily"}},
        "cron": "0 3 * * *",
        "next_fire_at": datetime(2026, 3, 11, 3, 0, tzinfo=UTC),
    }
    values.update(fields)
    schedule: Schedule = Schedule.objects.create(**values)
    return schedule


def form_data(**fields: str) -> dict[str, str]:
    """POST data of a complete, valid schedule form; an empty value leaves a box unticked."""
    data = {
        "name": "hourly records",
        "task_name": RECORD,
        "params": '{"args": ["k"], "kwargs": {}}',
        "cron": "0 * * * *",
        "time_zone": "",
        "catch_up": "once",
        "queue": "",
        "priority": "",
        "enabled": "on",
    }
    data.update(fields)
    return {key: value for key, value in data.items() if value or key != "enabled"}


def field_errors(response: Response, field: str) -> list[str]:
    assert response.status_code == 200, "the form was accepted"
    return [str(error) for error in response.context["adminform"].form.errors.get(field, [])]


# --- lists and pages ------------------------------------------------------------------------


def test_schedule_changelist__shows_zones_next_fire_times_and_escapes_user_data(
    admin_client: Client,
) -> None:
    make_schedule(name=SCRIPT, task_name=SCRIPT, params={"args": [SCRIPT], "kwargs": {}})
    make_schedule(
        name="berlin",
        time_zone="Europe/Berlin",
        next_fire_at=datetime(2026, 3, 11, 2, 0, tzinfo=UTC),
    )
    make_schedule(name="paused", enabled=False)

    response = admin_client.get(admin_url("schedule"))

    assert_escaped(response)
    content = response.content.decode()
    assert "TIME_ZONE (UTC)" in content
    assert "Europe/Berlin" in content
    assert "2026-03-11 03:00 CET" in content  # the schedule's own zone ...
    assert "2026-03-11 02:00 UTC" in content  # ... and UTC
    assert "disabled: will not fire" in content


def test_schedule_changelist__links_the_last_task_where_it_is_now(admin_client: Client) -> None:
    pending = make_task()
    done = make_completed(task_id=424242, status=CompletedTask.Status.FAILED)
    make_schedule(name="pending", last_task_id=pending.pk)
    make_schedule(name="done", last_task_id=424242)
    make_schedule(name="pruned", last_task_id=999999)

    content = admin_client.get(admin_url("schedule")).content.decode()

    assert f'href="{admin_url("task", "change", pending.pk)}">#{pending.pk}</a> pending' in content
    assert f'href="{admin_url("completedtask", "change", done.pk)}">#424242</a>' in content
    assert "failed" in content
    assert "#999999 (no longer recorded)" in content


def test_schedule_changelist__query_count_does_not_grow_with_rows(admin_client: Client) -> None:
    def add_rows(first: int, count: int) -> None:
        for i in range(first, first + count):
            make_schedule(name=f"s{i}", last_task_id=make_task().pk)
            make_completed(task_id=10_000 + i)
            make_schedule(name=f"c{i}", last_task_id=10_000 + i)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(admin_url("schedule")).status_code == 200
        return len(captured)

    add_rows(0, 1)
    few = queries()
    add_rows(1, 5)

    assert queries() == few


def test_schedule_filters_and_search__select_by_enabled_source_task_and_name(
    admin_client: Client,
) -> None:
    mine = make_schedule(name="mine")
    paused = make_schedule(name="paused", enabled=False, task_name=RECORD)
    coded = make_schedule(name="coded", source=Schedule.Source.CODE)

    def shown(**params: str) -> set[Any]:
        return listed(admin_client.get(admin_url("schedule"), params))

    assert shown(enabled__exact="0") == {paused.pk}
    assert shown(source__exact="code") == {coded.pk}
    assert shown(task_name=RECORD) == {paused.pk}
    assert shown(q="mine") == {mine.pk}
    assert shown(q="testapp.tasks.record") == {paused.pk}


def test_schedule_change_page__shows_the_admin_schedule_form_escaped(admin_client: Client) -> None:
    schedule = make_schedule(name=SCRIPT, params={"args": [SCRIPT], "kwargs": {}})

    response = admin_client.get(admin_url("schedule", "change", schedule.pk))

    assert_escaped(response)
    content = response.content.decode()
    for field in ("name", "task_name", "params", "cron", "time_zone", "enabled"):
        assert f'name="{field}"' in content
    assert "2026-03-11 03:00 UTC" in content


def test_schedule_change_page__of_a_code_schedule_edits_only_enabled(admin_client: Client) -> None:
    periodic.sync_schedules(NOW)
    schedule = Schedule.objects.get(name="tests.nightly_report")

    response = admin_client.get(admin_url("schedule", "change", schedule.pk))

    content = response.content.decode()
    assert response.status_code == 200
    assert 'name="enabled"' in content
    for field in ("name", "task_name", "params", "cron", "time_zone", "queue", "priority"):
        assert f'name="{field}"' not in content
    assert "0 3 * * *" in content
    assert "cannot be changed here" in content


def test_schedule_change_page__shows_code_schedule_params_escaped(admin_client: Client) -> None:
    schedule = make_schedule(source=Schedule.Source.SETTINGS, params={"args": [SCRIPT]})

    response = admin_client.get(admin_url("schedule", "change", schedule.pk))

    assert_escaped(response)
    assert "<pre" in response.content.decode()


# --- adding ---------------------------------------------------------------------------------


def test_schedule_add__creates_an_admin_schedule_with_its_next_fire_time(
    admin_client: Client, clock: time_machine.Traveller
) -> None:
    response = admin_client.post(
        admin_url("schedule", "add"),
        form_data(cron="  30   4 * * *", time_zone="Europe/Berlin", queue="cron", priority="3"),
        follow=True,
    )

    assert response.status_code == 200
    schedule = Schedule.objects.get()
    assert schedule.source == Schedule.Source.ADMIN
    assert schedule.cron == "30 4 * * *"
    assert schedule.params == {"args": ["k"], "kwargs": {}}
    assert (schedule.queue, schedule.priority, schedule.enabled) == ("cron", 3, True)
    # 04:30 in Berlin (CET, UTC+1) after 12:00 UTC on 10 March is 03:30 UTC the next day.
    assert schedule.next_fire_at == datetime(2026, 3, 11, 3, 30, tzinfo=UTC)


def test_schedule_add__with_empty_params_calls_the_task_with_no_arguments(
    admin_client: Client,
) -> None:
    admin_client.post(
        admin_url("schedule", "add"),
        form_data(task_name="tests.testapp.tasks.no_arguments", params=""),
    )

    assert Schedule.objects.get().params == {"args": [], "kwargs": {}}


def test_schedule_add__of_a_disabled_schedule_sets_no_next_fire_time(admin_client: Client) -> None:
    admin_client.post(admin_url("schedule", "add"), form_data(enabled=""))

    schedule = Schedule.objects.get()
    assert (schedule.enabled, schedule.next_fire_at) == (False, None)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("cron", "61 * * * *", "'61 * * * *'"),
        ("cron", "0 3 * *", "'0 3 * *'"),
        ("cron", "@fortnightly", "'@fortnightly'"),
        ("time_zone", "Mars/Olympus_Mons", "'Mars/Olympus_Mons'"),
        ("catch_up", "sometimes", "sometimes"),
        ("task_name", "tests.not_registered", "tests.not_registered"),
        ("params", "[1, 2]", "[1, 2]"),
        ("params", '{"args": [1], "extra": true}', '"extra": true'),
        ("params", '{"args": "k", "kwargs": {}}', '"args": "k"'),
        ("params", '{"args": [], "kwargs": {"key": "k", "nope": 1}}', "'nope'"),
        ("params", '{"args": ["a", "b"], "kwargs": {}}', "too many positional arguments"),
        ("params", '{"args": ["k"', "Enter valid JSON"),
        ("name", "tests.nightly_report", "'tests.nightly_report'"),
    ],
)
def test_schedule_add__refuses_invalid_input_naming_it_and_creates_nothing(
    admin_client: Client, field: str, value: str, named: str
) -> None:
    response = admin_client.post(admin_url("schedule", "add"), form_data(**{field: value}))

    errors = field_errors(response, field)
    assert any(named in error for error in errors), errors
    assert not Schedule.objects.exists()


def test_schedule_add__shows_the_refused_value_escaped(admin_client: Client) -> None:
    response = admin_client.post(admin_url("schedule", "add"), form_data(cron=SCRIPT))

    assert field_errors(response, "cron")
    assert_escaped(response)
    assert not Schedule.objects.exists()


def test_schedule_add__is_refused_without_the_add_permission(staff: StaffLogin) -> None:
    client = staff("view_schedule", "change_schedule")

    response = client.post(admin_url("schedule", "add"), form_data())

    assert response.status_code == 403
    assert not Schedule.objects.exists()


# --- changing -------------------------------------------------------------------------------


def test_schedule_change__of_the_cron_restarts_from_the_next_tick_after_now(
    admin_client: Client, clock: time_machine.Traveller
) -> None:
    schedule = make_schedule(task_name=RECORD, params={"args": ["k"], "kwargs": {}})

    admin_client.post(
        admin_url("schedule", "change", schedule.pk),
        form_data(name="newsletter", cron="*/15 * * * *"),
    )

    schedule.refresh_from_db()
    assert schedule.cron == "*/15 * * * *"
    assert schedule.next_fire_at == datetime(2026, 3, 10, 12, 15, tzinfo=UTC)


def test_schedule_change__of_the_queue_only_keeps_the_next_tick(
    admin_client: Client, clock: time_machine.Traveller
) -> None:
    tick = datetime(2026, 3, 11, 3, 0, tzinfo=UTC)
    schedule = make_schedule(
        task_name=RECORD, params={"args": ["k"], "kwargs": {}}, cron="0 3 * * *", next_fire_at=tick
    )

    admin_client.post(
        admin_url("schedule", "change", schedule.pk),
        form_data(name="newsletter", cron="0 3 * * *", queue="bulk"),
    )

    schedule.refresh_from_db()
    assert (schedule.queue, schedule.next_fire_at) == ("bulk", tick)


def test_schedule_change__keeps_a_tick_a_worker_enqueued_while_the_form_was_open(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    due = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)
    schedule = make_schedule(
        task_name=RECORD, params={"args": ["k"], "kwargs": {}}, next_fire_at=due
    )
    original_get_object = ScheduleAdmin.get_object

    def get_object_then_worker_fires(
        self: ScheduleAdmin, *args: Any, **kwargs: Any
    ) -> Schedule | None:
        obj = original_get_object(self, *args, **kwargs)
        assert obj is not None
        periodic.fire_one(obj, due + timedelta(seconds=1))
        return obj

    monkeypatch.setattr(ScheduleAdmin, "get_object", get_object_then_worker_fires)

    admin_client.post(
        admin_url("schedule", "change", schedule.pk),
        form_data(name="newsletter", cron="0 3 * * *", queue="bulk"),
    )

    schedule.refresh_from_db()
    task = Task.objects.get()
    assert schedule.queue == "bulk"
    assert schedule.next_fire_at == datetime(2026, 3, 11, 3, 0, tzinfo=UTC)
    assert (schedule.last_fired_at, schedule.last_task_id) == (due, task.pk)


def test_schedule_change__disabling_keeps_the_next_tick_and_enabling_restarts_from_now(
    admin_client: Client, clock: time_machine.Traveller
) -> None:
    stale = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    schedule = make_schedule(task_name=RECORD, params={"args": ["k"], "kwargs": {}})
    url = admin_url("schedule", "change", schedule.pk)

    admin_client.post(url, form_data(name="newsletter", cron="0 3 * * *", enabled=""))
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.next_fire_at) == (
        False,
        datetime(2026, 3, 11, 3, 0, tzinfo=UTC),
    )

    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=stale)
    admin_client.post(url, form_data(name="newsletter", cron="0 3 * * *"))
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.next_fire_at) == (
        True,
        datetime(2026, 3, 11, 3, 0, tzinfo=UTC),
    )


@pytest.mark.parametrize("source", [Schedule.Source.CODE, Schedule.Source.SETTINGS])
def test_schedule_change__of_a_code_or_settings_schedule_changes_only_enabled(
    admin_client: Client, source: str
) -> None:
    schedule = make_schedule(source=source)

    response = admin_client.post(
        admin_url("schedule", "change", schedule.pk),
        form_data(name="renamed", task_name=RECORD, cron="* * * * *", params="[]", enabled=""),
        follow=True,
    )

    assert response.status_code == 200
    schedule.refresh_from_db()
    assert (schedule.name, schedule.task_name, schedule.cron) == (
        "newsletter",
        NEWSLETTER,
        "0 3 * * *",
    )
    assert schedule.params == {"args": [7], "kwargs": {"template": "daily"}}
    assert schedule.enabled is False


@pytest.mark.parametrize("source", [Schedule.Source.CODE, Schedule.Source.SETTINGS])
def test_schedule_delete__is_refused_for_a_code_or_settings_schedule(
    admin_client: Client, source: str
) -> None:
    schedule = make_schedule(source=source)

    response = admin_client.post(admin_url("schedule", "delete", schedule.pk), {"post": "yes"})

    assert response.status_code == 403
    assert Schedule.objects.filter(pk=schedule.pk).exists()


def test_schedule_delete__removes_an_orphaned_code_schedule(admin_client: Client) -> None:
    schedule = make_schedule(source=Schedule.Source.CODE, orphaned_at=NOW)

    response = admin_client.get(admin_url("schedule", "change", schedule.pk))
    assert "orphaned: will not fire" in response.content.decode()
    admin_client.post(admin_url("schedule", "delete", schedule.pk), {"post": "yes"})

    assert not Schedule.objects.exists()


def test_schedule_delete__removes_an_admin_schedule(admin_client: Client) -> None:
    schedule = make_schedule()

    admin_client.post(admin_url("schedule", "delete", schedule.pk), {"post": "yes"})

    assert not Schedule.objects.exists()


def test_schedule_change__of_a_schedule_whose_task_is_gone_names_it_and_saves_nothing(
    admin_client: Client,
) -> None:
    schedule = make_schedule(task_name="tests.removed_task")
    url = admin_url("schedule", "change", schedule.pk)

    page = admin_client.get(url).content.decode()
    response = admin_client.post(
        url, form_data(name="newsletter", task_name="tests.removed_task", queue="bulk")
    )

    assert "tests.removed_task (not registered)" in page
    assert any("'tests.removed_task'" in error for error in field_errors(response, "task_name"))
    schedule.refresh_from_db()
    assert schedule.queue == ""


def test_schedule_change__refuses_to_enable_a_code_schedule_broken_in_the_database(
    admin_client: Client,
) -> None:
    schedule = make_schedule(source=Schedule.Source.CODE, enabled=False, time_zone="Nowhere/Land")

    response = admin_client.post(admin_url("schedule", "change", schedule.pk), {"enabled": "on"})

    errors = [str(error) for error in response.context["adminform"].form.non_field_errors()]
    assert any("'Nowhere/Land'" in error for error in errors), errors
    schedule.refresh_from_db()
    assert schedule.enabled is False


# --- actions --------------------------------------------------------------------------------


def test_enable_action__restarts_a_disabled_schedule_from_the_next_tick_after_now(
    admin_client: Client, clock: time_machine.Traveller
) -> None:
    stale = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    paused = make_schedule(enabled=False, next_fire_at=stale)
    running = make_schedule(name="running", next_fire_at=stale)

    response = post_action(admin_client, "schedule", "enable", [paused, running])

    paused.refresh_from_db()
    running.refresh_from_db()
    assert (paused.enabled, paused.next_fire_at) == (True, datetime(2026, 3, 11, 3, 0, tzinfo=UTC))
    assert running.next_fire_at == stale  # already enabled: left alone
    assert messages_of(response) == ["1 schedule enabled."]
    assert LogEntry.objects.get().object_id == str(paused.pk)


def test_enable_action__reports_a_schedule_broken_in_the_database_and_leaves_it(
    admin_client: Client,
) -> None:
    broken = make_schedule(enabled=False, time_zone="Nowhere/Land")

    response = post_action(admin_client, "schedule", "enable", [broken])

    broken.refresh_from_db()
    assert broken.enabled is False
    assert any("'Nowhere/Land'" in message for message in messages_of(response))


def test_disable_action__keeps_the_next_tick_and_the_schedule_stops_firing(
    admin_client: Client,
) -> None:
    tick = datetime(2026, 3, 11, 3, 0, tzinfo=UTC)
    schedule = make_schedule(next_fire_at=tick)

    response = post_action(admin_client, "schedule", "disable", [schedule])

    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.next_fire_at) == (False, tick)
    assert messages_of(response) == ["1 schedule disabled."]
    assert periodic.fire_due(tick + timedelta(minutes=1)) == 0
    assert not Task.objects.exists()


def test_fire_due__fires_an_enabled_schedule_and_skips_a_disabled_one() -> None:
    tick = datetime(2026, 3, 11, 3, 0, tzinfo=UTC)
    make_schedule(name="on", next_fire_at=tick)
    off = make_schedule(name="off", next_fire_at=tick, enabled=False)

    assert periodic.fire_due(tick + timedelta(minutes=1)) == 1

    assert Task.objects.get().verbose_name.startswith("on @ ")
    off.refresh_from_db()
    assert (off.next_fire_at, off.last_fired_at) == (tick, None)


@pytest.mark.parametrize("action", ["enable", "disable"])
def test_enable_and_disable_actions__need_the_change_permission(
    staff: StaffLogin, action: str
) -> None:
    client = staff("view_schedule", "add_task")
    schedule = make_schedule(enabled=action == "disable")

    assert action_names(client.get(admin_url("schedule"))) == {"run_now"}
    post_action(client, "schedule", action, [schedule])

    schedule.refresh_from_db()
    assert schedule.enabled is (action == "disable")


def test_enable_and_disable_actions__are_offered_with_the_change_and_add_task_permissions(
    staff: StaffLogin,
) -> None:
    client = staff("view_schedule", "change_schedule", "add_task")
    schedule = make_schedule()

    assert action_names(client.get(admin_url("schedule"))) == {"enable", "disable", "run_now"}
    post_action(client, "schedule", "disable", [schedule])

    schedule.refresh_from_db()
    assert schedule.enabled is False


def test_enable_action__needs_add_task_too_but_disable_does_not(staff: StaffLogin) -> None:
    client = staff("view_schedule", "change_schedule")
    schedule = make_schedule(enabled=False)

    assert action_names(client.get(admin_url("schedule"))) == {"disable"}
    post_action(client, "schedule", "enable", [schedule])

    schedule.refresh_from_db()
    assert schedule.enabled is False


def test_add_schedule__without_add_task_is_refused(staff: StaffLogin) -> None:
    client = staff("view_schedule", "add_schedule")

    response = client.post(admin_url("schedule", "add"), form_data(cron="* * * * *"))

    assert response.status_code == 403
    assert not Schedule.objects.exists()


def test_change_form__without_add_task_cannot_change_when_or_what_a_schedule_runs(
    staff: StaffLogin,
) -> None:
    client = staff("view_schedule", "change_schedule")
    schedule = make_schedule(enabled=False, cron="0 3 * * *")

    client.post(
        admin_url("schedule", "change", schedule.pk),
        form_data(name=schedule.name, cron="* * * * *"),
    )

    schedule.refresh_from_db()
    assert (schedule.cron, schedule.enabled) == ("0 3 * * *", False)


def test_run_now_action__enqueues_a_ready_task_and_leaves_the_ticks_alone(
    admin_client: Client,
) -> None:
    tick = datetime(2026, 3, 11, 3, 0, tzinfo=UTC)
    schedule = make_schedule(
        enabled=False, next_fire_at=tick, last_task_id=5, queue="cron", priority=4
    )

    response = post_action(admin_client, "schedule", "run_now", [schedule])

    task = Task.objects.get()
    assert (task.task_name, task.params) == (NEWSLETTER, schedule.params)
    assert (task.queue, task.priority, task.max_attempts) == ("cron", 4, 5)
    assert task.status == "ready"
    assert task.verbose_name == "newsletter (run now)"
    schedule.refresh_from_db()
    assert (schedule.next_fire_at, schedule.last_fired_at, schedule.last_task_id) == (
        tick,
        None,
        5,
    )
    assert messages_of(response) == [f"1 task enqueued: newsletter (task #{task.pk})."]


def test_run_schedule_now__builds_the_task_as_a_tick_would() -> None:
    schedule = make_schedule(params={"args": [3], "kwargs": {}})

    ran = run_schedule_now(schedule, NOW)
    ticked = periodic.fire_one(schedule, datetime(2026, 3, 11, 3, 0, 1, tzinfo=UTC))

    assert ticked is not None
    fields = ("task_name", "params", "task_hash", "queue", "priority", "max_attempts")
    assert [getattr(ran, f) for f in fields] == [getattr(ticked, f) for f in fields]
    assert ran.run_at == NOW


def test_run_now_action__sends_task_created(admin_client: Client) -> None:
    schedule = make_schedule(
        task_name=test_tasks.CRON_TICK, params={"args": ["manual"], "kwargs": {}}
    )

    post_action(admin_client, "schedule", "run_now", [schedule])

    assert test_tasks.TaskRun.objects.filter(key="fired:manual").count() == 1


def test_run_now_action__refuses_a_schedule_whose_task_is_not_registered(
    admin_client: Client,
) -> None:
    schedule = make_schedule(task_name="tests.removed_task")

    response = post_action(admin_client, "schedule", "run_now", [schedule])

    assert not Task.objects.exists()
    assert messages_of(response) == [
        "Schedule 'newsletter' was not run: no task is registered as 'tests.removed_task'."
    ]


def test_run_now_action__needs_the_add_task_permission(staff: StaffLogin) -> None:
    client = staff("view_schedule", "change_schedule", "change_task")
    schedule = make_schedule()

    assert "run_now" not in action_names(client.get(admin_url("schedule")))
    post_action(client, "schedule", "run_now", [schedule])

    assert not Task.objects.exists()


def test_run_now_action__is_offered_to_a_user_who_may_add_tasks(staff: StaffLogin) -> None:
    client = staff("view_schedule", "add_task")
    schedule = make_schedule()

    post_action(client, "schedule", "run_now", [schedule])

    assert Task.objects.get().task_name == NEWSLETTER


def test_schedule_actions__are_refused_to_a_user_without_schedule_permissions(
    staff: StaffLogin,
) -> None:
    client = staff("add_task", "change_task")
    schedule = make_schedule()

    response = client.post(
        admin_url("schedule"), {"action": "disable", "_selected_action": [schedule.pk]}
    )

    assert response.status_code == 403
    schedule.refresh_from_db()
    assert schedule.enabled is True
