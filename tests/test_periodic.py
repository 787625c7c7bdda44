"""Cron schedules: definitions, syncing, and exactly-once firing (in process)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from background_tasks import periodic, schedule_control
from background_tasks.decorator import background
from background_tasks.exceptions import (
    DuplicateScheduleName,
    InvalidTaskArguments,
    InvalidTaskError,
    ScheduleRedefinedWarning,
)
from background_tasks.models import Schedule, Task
from background_tasks.registry import registry
from tests.testapp import tasks

pytestmark = pytest.mark.django_db

UTC = timezone.utc
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_cron_decorator__declares_a_schedule_named_after_the_task() -> None:
    definition = periodic.all_definitions()["tests.nightly_report"]

    assert definition.task_name == "tests.nightly_report"
    assert definition.cron == "0 3 * * *"
    assert definition.source == "code"


@pytest.fixture
def code_schedules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Declarations made by the test are forgotten after it."""
    monkeypatch.setattr(periodic, "_code_definitions", dict(periodic._code_definitions))
    monkeypatch.setattr(periodic, "_code_sites", dict(periodic._code_sites))


def _declare_nightly(hour: int) -> periodic.ScheduleDefinition:
    return periodic.periodic(tasks.no_arguments, f"0 {hour} * * *", name="tests.declared_twice")


@pytest.mark.usefixtures("code_schedules")
def test_periodic__a_schedule_name_declared_in_two_places_is_an_error() -> None:
    periodic.periodic(tasks.no_arguments, "0 1 * * *", name="tests.declared_twice")

    with pytest.raises(DuplicateScheduleName, match=r"'tests\.declared_twice' is already declared"):
        periodic.periodic(tasks.no_arguments, "0 2 * * *", name="tests.declared_twice")

    assert periodic.all_definitions()["tests.declared_twice"].cron == "0 1 * * *"


@pytest.mark.usefixtures("code_schedules")
def test_periodic__the_same_declaration_executed_again_replaces_it_with_a_warning() -> None:
    _declare_nightly(1)

    with pytest.warns(ScheduleRedefinedWarning, match=r"declared_twice' was declared again"):
        _declare_nightly(2)

    assert periodic.all_definitions()["tests.declared_twice"].cron == "0 2 * * *"


def test_sync__creates_the_schedule_with_its_next_tick() -> None:
    periodic.sync_schedules(NOW)

    schedule = Schedule.objects.get(name="tests.nightly_report")
    assert schedule.next_fire_at == datetime(2026, 3, 11, 3, 0, tzinfo=UTC)
    assert schedule.source == Schedule.Source.CODE


def test_sync__keeps_an_operators_pause_and_restarts_after_a_cron_change() -> None:
    periodic.sync_schedules(NOW)
    Schedule.objects.filter(name="tests.nightly_report").update(enabled=False, cron="0 4 * * *")

    periodic.sync_schedules(NOW)

    schedule = Schedule.objects.get(name="tests.nightly_report")
    assert schedule.enabled is False
    assert schedule.cron == "0 3 * * *"
    assert schedule.next_fire_at == datetime(2026, 3, 11, 3, 0, tzinfo=UTC)


def test_sync__marks_code_schedules_no_longer_defined_orphaned_and_keeps_admin_ones() -> None:
    Schedule.objects.create(
        name="gone", task_name="x", cron="* * * * *", source=Schedule.Source.CODE
    )
    Schedule.objects.create(
        name="mine", task_name="x", cron="* * * * *", source=Schedule.Source.ADMIN
    )

    periodic.sync_schedules(NOW)
    periodic.sync_schedules(NOW + timedelta(hours=1))  # an orphan keeps its first mark

    orphaned = dict(Schedule.objects.values_list("name", "orphaned_at"))
    assert orphaned == {"gone": NOW, "mine": None, "tests.nightly_report": None}


def _new_code_declares_extra() -> None:
    periodic.periodic(tasks.no_arguments, "0 5 * * *", name="tests.extra")


@pytest.mark.usefixtures("code_schedules")
def test_sync__a_worker_running_older_code_keeps_the_pause_of_a_schedule_it_does_not_know() -> None:
    # A rolling deploy: the new code declares tests.extra, an operator pauses it, then a worker
    # still running the old code (without that declaration) starts, then a new one again.
    _new_code_declares_extra()
    periodic.sync_schedules(NOW)
    extra = Schedule.objects.get(name="tests.extra")
    assert schedule_control.pause(extra, NOW).changed

    new_code = dict(periodic._code_definitions)
    del periodic._code_definitions["tests.extra"]
    periodic.sync_schedules(NOW + timedelta(minutes=1))  # the old worker
    periodic._code_definitions.update(new_code)
    periodic.sync_schedules(NOW + timedelta(minutes=2))  # a new worker

    kept = Schedule.objects.get(name="tests.extra")
    assert kept.pk == extra.pk
    assert (kept.enabled, kept.orphaned_at) == (False, None)
    assert kept.next_fire_at == datetime(2026, 3, 11, 5, 0, tzinfo=UTC)


@pytest.mark.usefixtures("code_schedules")
def test_sync__a_schedule_taken_back_keeps_its_tick_and_catches_up_the_ticks_missed() -> None:
    _new_code_declares_extra()
    periodic.sync_schedules(NOW)
    new_code = dict(periodic._code_definitions)
    del periodic._code_definitions["tests.extra"]
    periodic.sync_schedules(NOW)  # orphaned until the next day's 05:00 tick has passed
    after_the_tick = datetime(2026, 3, 11, 5, 30, tzinfo=UTC)
    periodic.fire_due(after_the_tick)
    extra_ticks = Task.objects.filter(verbose_name__startswith="tests.extra @")
    assert not extra_ticks.exists()  # an orphan does not fire

    periodic._code_definitions.update(new_code)
    periodic.sync_schedules(after_the_tick)

    # catch_up="once", as after a time with no worker running: the missed tick runs once.
    periodic.fire_due(after_the_tick)
    assert [t.scheduled_at for t in extra_ticks] == [datetime(2026, 3, 11, 5, 0, tzinfo=UTC)]


def test_fire_due__ignores_orphaned_schedules() -> None:
    _schedule(orphaned_at=NOW)

    assert periodic.fire_due(NOW + timedelta(minutes=5)) == 0
    assert periodic.seconds_until_next_fire(NOW) is None


def test_fire_one__a_schedule_orphaned_after_a_worker_read_it_does_not_fire() -> None:
    read_by_a_worker = _schedule()
    Schedule.objects.filter(pk=read_by_a_worker.pk).update(orphaned_at=NOW)

    assert periodic.fire_one(read_by_a_worker, NOW + timedelta(seconds=1)) is None

    assert Task.objects.count() == 0


@override_settings(
    BACKGROUND_TASKS_SCHEDULES={
        "hourly-newsletter": {
            "task": "tests.testapp.tasks.send_newsletter",
            "cron": "0 * * * *",
            "args": [7],
            "kwargs": {"template": "hourly"},
            "timezone": "Europe/Berlin",
            "queue": "cron",
            "priority": 5,
        }
    }
)
def test_sync__creates_schedules_from_settings() -> None:
    periodic.sync_schedules(NOW)

    schedule = Schedule.objects.get(name="hourly-newsletter")
    assert schedule.source == Schedule.Source.SETTINGS
    assert schedule.params == {"args": [7], "kwargs": {"template": "hourly"}}
    assert schedule.time_zone == "Europe/Berlin"
    assert schedule.next_fire_at == datetime(2026, 3, 10, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"task": "tests.testapp.tasks.record", "cron": "61 * * * *", "args": ["k"]}, "61 * * * *"),
        ({"task": "no.such.task", "cron": "* * * * *"}, "no.such.task"),
        (
            {
                "task": "tests.testapp.tasks.record",
                "cron": "* * * * *",
                "args": ["k"],
                "timezone": "Mars/Base",
            },
            "Mars/Base",
        ),
        (
            {"task": "tests.testapp.tasks.record", "cron": "* * * * *", "args": ["k"], "every": 5},
            "every",
        ),
        ({"task": "tests.testapp.tasks.record", "cron": "* * * * *", "args": [{1, 2}]}, "set"),
        (
            {
                "task": "tests.testapp.tasks.record",
                "cron": "* * * * *",
                "args": ["k"],
                "catch_up": "all",
            },
            "all",
        ),
    ],
)
def test_settings_schedule__bad_entry_raises_a_clear_error(
    entry: dict[str, object], message: str
) -> None:
    with (
        override_settings(BACKGROUND_TASKS_SCHEDULES={"bad": entry}),
        pytest.raises(ImproperlyConfigured) as error,
    ):
        periodic.settings_definitions()

    assert message in str(error.value)
    assert "bad" in str(error.value)


def test_cron_decorator__rejects_a_bad_expression_and_registers_nothing() -> None:
    with pytest.raises(InvalidTaskError, match="0 25"):

        @background(name="tests.bad_cron", cron="0 25 * * *")
        def bad() -> None: ...

    assert "tests.bad_cron" not in registry


def test_cron_decorator__rejects_required_parameters_and_registers_nothing() -> None:
    with pytest.raises(InvalidTaskArguments, match="user_id"):

        @background(name="tests.cron_needs_args", cron="0 3 * * *")
        def needs(user_id: int) -> None: ...

    assert "tests.cron_needs_args" not in registry


def test_periodic__rejects_arguments_that_are_not_json() -> None:
    with pytest.raises(TypeError, match="set"):
        periodic.periodic(tasks.record, "* * * * *", name="bad-args", args=[{1}])


def _schedule(**fields: object) -> Schedule:
    values: dict[str, object] = {
        "name": "every-minute",
        "task_name": "tests.testapp.tasks.record",
        "params": {"args": ["tick"], "kwargs": {}},
        "cron": "* * * * *",
        "next_fire_at": NOW,
    }
    values.update(fields)
    return Schedule.objects.create(**values)


def test_fire_due__enqueues_the_tick_once_and_moves_to_the_next() -> None:
    schedule = _schedule()

    assert periodic.fire_due(NOW + timedelta(seconds=1)) == 1
    assert periodic.fire_due(NOW + timedelta(seconds=2)) == 0

    task = Task.objects.get()
    assert task.scheduled_at == NOW
    assert task.params == {"args": ["tick"], "kwargs": {}}
    schedule.refresh_from_db()
    assert schedule.last_fired_at == NOW
    assert schedule.last_task_id == task.pk
    assert schedule.next_fire_at == NOW + timedelta(minutes=1)


def test_fire_one__a_worker_holding_a_stale_copy_enqueues_nothing() -> None:
    stale_copy = _schedule()
    assert periodic.fire_one(Schedule.objects.get(pk=stale_copy.pk), NOW) is not None

    assert periodic.fire_one(stale_copy, NOW) is None

    assert Task.objects.count() == 1


def test_fire_one__a_schedule_paused_after_a_worker_read_it_does_not_fire() -> None:
    read_by_a_worker = _schedule()
    assert schedule_control.pause(Schedule.objects.get(pk=read_by_a_worker.pk), NOW).changed

    assert periodic.fire_one(read_by_a_worker, NOW + timedelta(seconds=1)) is None

    assert Task.objects.count() == 0
    paused = Schedule.objects.get(pk=read_by_a_worker.pk)
    assert (paused.enabled, paused.next_fire_at, paused.last_fired_at) == (False, NOW, None)


def test_fire_due__after_downtime_runs_once_and_returns_to_the_grid() -> None:
    _schedule(next_fire_at=NOW - timedelta(hours=3))

    assert periodic.fire_due(NOW + timedelta(seconds=30)) == 1

    assert Task.objects.count() == 1
    assert Schedule.objects.get().next_fire_at == NOW + timedelta(minutes=1)


def test_fire_due__skip_drops_ticks_missed_beyond_the_grace() -> None:
    _schedule(next_fire_at=NOW - timedelta(hours=3), catch_up=Schedule.CatchUp.SKIP)

    assert periodic.fire_due(NOW + timedelta(seconds=30)) == 0

    assert not Task.objects.exists()
    assert Schedule.objects.get().next_fire_at == NOW + timedelta(minutes=1)


def test_fire_due__skip_still_runs_a_tick_that_is_only_slightly_late() -> None:
    _schedule(catch_up=Schedule.CatchUp.SKIP)

    assert periodic.fire_due(NOW + timedelta(seconds=5)) == 1


def test_fire_due__ignores_disabled_schedules() -> None:
    _schedule(enabled=False)

    assert periodic.fire_due(NOW + timedelta(minutes=5)) == 0


def test_fire_due__disables_a_schedule_whose_cron_was_broken_by_hand() -> None:
    _schedule(cron="not a cron")

    assert periodic.fire_due(NOW) == 0

    assert Schedule.objects.get().enabled is False


def test_fire_due__a_tick_of_an_unregistered_task_is_enqueued_and_fails_visibly() -> None:
    from background_tasks.models import CompletedTask
    from background_tasks.testing import run_tasks

    _schedule(task_name="gone.from.code")
    periodic.fire_due(NOW)

    run_tasks()

    failed = CompletedTask.objects.get()
    assert failed.status == CompletedTask.Status.FAILED
    assert "gone.from.code" in failed.last_error


@override_settings(
    BACKGROUND_TASKS_SCHEDULES={"bad": {"task": "tests.testapp.tasks.record", "cron": "* * *"}}
)
def test_system_check__reports_a_bad_settings_schedule() -> None:
    from background_tasks.checks import check_settings

    errors = [e for e in check_settings() if e.id == "background_tasks.E009"]

    assert len(errors) == 1
    assert "* * *" in errors[0].msg
