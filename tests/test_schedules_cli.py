"""``background_tasks schedules``: list cron schedules, pause and resume one."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.management import CommandError, call_command

from background_tasks import periodic
from background_tasks.models import CompletedTask, Schedule, Task

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 10, 30, tzinfo=dt_timezone.utc)


def run(*args: str) -> str:
    out = StringIO()
    call_command("background_tasks", "schedules", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def make_schedule(**fields: Any) -> Schedule:
    values: dict[str, Any] = {
        "name": "nightly",
        "task_name": "tests.testapp.tasks.record",
        "params": {"args": ["x"], "kwargs": {}},
        "cron": "0 3 * * *",
        "next_fire_at": datetime(2026, 3, 3, 3, 0, tzinfo=dt_timezone.utc),
    }
    values.update(fields)
    return Schedule.objects.create(**values)


def test_schedules__lists_next_tick_and_last_run_with_its_task_state() -> None:
    done = make_schedule(
        name="a-report",
        last_task_id=41,
        last_fired_at=datetime(2026, 3, 2, 3, 0, tzinfo=dt_timezone.utc),
    )
    CompletedTask.objects.create(task_name=done.task_name, task_id=41, status="failed")
    make_schedule(name="b-pending", last_task_id=Task.objects.create(task_name="t").pk)
    make_schedule(name="c-never")

    lines = run().splitlines()

    assert lines[0].split() == [
        "NAME",
        "TASK",
        "CRON",
        "ZONE",
        "ENABLED",
        "NEXT",
        "TICK",
        "LAST",
        "TICK",
        "LAST",
        "TASK",
    ]
    assert "2026-03-03 03:00:00" in lines[1] and "2026-03-02 03:00:00" in lines[1]
    assert lines[1].endswith("#41 failed")
    assert lines[2].endswith("pending")
    assert lines[3].endswith("-")


def test_schedules_json__has_every_schedule_with_times_in_iso_format() -> None:
    make_schedule(enabled=False)

    (data,) = json.loads(run("--json"))

    assert data["name"] == "nightly" and data["enabled"] is False
    # A paused schedule has no next tick: it will not fire.
    assert data["next_fire_at"] is None
    assert data["last_task_status"] is None


def test_schedules__an_orphaned_schedule_shows_as_such_with_no_next_tick() -> None:
    make_schedule(name="a-gone", source="code", orphaned_at=NOW)
    make_schedule(name="b-gone-paused", source="code", orphaned_at=NOW, enabled=False)

    lines = run().splitlines()
    data = json.loads(run("--json"))

    assert lines[1].split()[-4:] == ["orphaned", "-", "-", "-"]
    assert lines[2].split()[-4:] == ["paused,orphaned", "-", "-", "-"]
    assert [(d["orphaned_at"], d["next_fire_at"]) for d in data] == [(NOW.isoformat(), None)] * 2


def test_schedules__with_none_says_so() -> None:
    assert run().strip() == "No schedules."


def test_schedules_pause__stops_it_and_a_second_pause_changes_nothing() -> None:
    schedule = make_schedule()

    assert run("pause", "nightly").strip() == "Schedule 'nightly' paused."
    assert Schedule.objects.get(pk=schedule.pk).enabled is False
    assert "already paused" in run("pause", "nightly")
    assert Schedule.objects.get(pk=schedule.pk).next_fire_at == schedule.next_fire_at


def test_schedules_pause__survives_the_sync_at_worker_start() -> None:
    make_schedule(source="settings")
    run("pause", "nightly")
    entry = {"nightly": {"task": "tests.testapp.tasks.record", "cron": "0 3 * * *", "args": ["x"]}}
    from django.test import override_settings

    with override_settings(BACKGROUND_TASKS_SCHEDULES=entry):
        periodic.sync_schedules()

    assert Schedule.objects.get(name="nightly").enabled is False


@time_machine.travel(NOW, tick=False)
def test_schedules_resume__fires_from_the_next_tick_after_now_without_catching_up() -> None:
    schedule = make_schedule(enabled=False, next_fire_at=NOW - timedelta(days=3))

    out = run("--json", "resume", "nightly")

    assert json.loads(out) == {"name": "nightly", "action": "resume", "changed": True}
    schedule.refresh_from_db()
    assert schedule.enabled is True
    assert schedule.next_fire_at == datetime(2026, 3, 3, 3, 0, tzinfo=dt_timezone.utc)


def test_schedules_pause__an_unknown_name_is_an_error_that_says_how_to_list_them() -> None:
    make_schedule()

    with pytest.raises(CommandError, match=r"No schedule is named 'nigthly'; .*schedules"):
        run("pause", "nigthly")


def test_schedules_resume__a_schedule_with_a_broken_cron_is_refused_and_stays_paused() -> None:
    schedule = make_schedule(enabled=False, cron="not a cron")

    with pytest.raises(CommandError, match="was not resumed"):
        run("resume", "nightly")
    assert Schedule.objects.get(pk=schedule.pk).enabled is False
