"""One definition of a live task's state: the admin, the command and the model agree on it."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from background_tasks.admin.tasks import TaskAdmin
from background_tasks.models import QUARANTINED, Task, TaskState

pytestmark = pytest.mark.django_db

NAME = "tests.testapp.tasks.send_newsletter"


def make_task(**fields: Any) -> Task:
    fields.setdefault("task_name", NAME)
    fields.setdefault("params", {"args": [1], "kwargs": {}})
    task: Task = Task.objects.create(**fields)
    return task


def rows_in_every_state() -> dict[str, list[Task]]:
    """Rows of each state, with the ones the older definitions put in two states at once."""
    now = timezone.now()
    hour = timedelta(hours=1)
    return {
        "ready": [make_task(run_at=now - hour)],
        "scheduled": [make_task(run_at=now + hour)],
        "running": [
            make_task(locked_by="w1", locked_at=now),
            # Held by a worker after a failed attempt: running, not retrying.
            make_task(locked_by="w1", locked_at=now, last_error="boom", attempts=1),
            make_task(locked_by="w2", locked_at=now, cancel_requested_at=now),
        ],
        "retrying": [
            # Due for its retry: retrying, not ready.
            make_task(run_at=now - hour, last_error="boom", attempts=1),
            make_task(run_at=now + hour, last_error="boom", attempts=2),
        ],
        "quarantined": [make_task(locked_by=QUARANTINED, last_error="cannot be loaded")],
    }


def cli_list(*args: str) -> list[dict[str, Any]]:
    out = StringIO()
    call_command("background_tasks", "list", "--json", "--limit", "100", *args, stdout=out)
    listed: list[dict[str, Any]] = json.loads(out.getvalue())
    return listed


def admin_list(client: Client, state: str) -> set[int]:
    response = client.get(reverse("admin:background_tasks_task_changelist"), {"status": state})
    assert response.status_code == 200
    return {task.pk for task in response.context["cl"].result_list}


def test_states__the_admin_filter_and_the_cli_give_every_row_the_same_state(
    admin_client: Client,
) -> None:
    rows = rows_in_every_state()

    for state, tasks in rows.items():
        expected = {task.pk for task in tasks}
        listed = cli_list("--status", state)
        assert admin_list(admin_client, state) == expected, state
        assert {row["id"] for row in listed} == expected, state
        assert {row["status"] for row in listed} == {state}, state
        assert {Task.objects.get(pk=pk).state for pk in expected} == {state}, state
    assert {row["id"]: row["status"] for row in cli_list()} == {
        task.pk: state for state, tasks in rows.items() for task in tasks
    }


def test_states__every_live_row_is_in_exactly_one_state() -> None:
    rows_in_every_state()
    now = timezone.now()

    per_state = {
        state: set(Task.objects.in_state(state, now).values_list("pk", flat=True))
        for state in TaskState.values
    }

    everything = set(Task.objects.values_list("pk", flat=True))
    assert sum(len(pks) for pks in per_state.values()) == len(everything)
    assert set().union(*per_state.values()) == everything
    for task in Task.objects.all():
        assert task.pk in per_state[task.state_at(now)]


def test_states__failing_is_the_older_name_of_retrying_in_the_admin_and_the_cli(
    admin_client: Client,
) -> None:
    retrying = {task.pk for task in rows_in_every_state()["retrying"]}

    assert admin_list(admin_client, "failing") == retrying
    assert {row["id"] for row in cli_list("--status", "failing")} == retrying


def test_states__the_admin_column_shows_a_cancel_request_on_a_running_task() -> None:
    now = timezone.now()
    asked = make_task(locked_by="w1", locked_at=now, cancel_requested_at=now)
    running = make_task(locked_by="w1", locked_at=now)
    column = TaskAdmin(Task, admin_site=None).status_display  # type: ignore[arg-type]

    assert ">running, cancel requested<" in column(asked)
    assert ">running<" in column(running)


def test_states__stats_counts_each_row_in_its_one_state() -> None:
    rows_in_every_state()
    out = StringIO()

    call_command("background_tasks", "stats", "--json", stdout=out)

    total = json.loads(out.getvalue())["total"]
    assert {state: total[state] for state in TaskState.values} == {
        "ready": 1,
        "scheduled": 1,
        "running": 3,
        "retrying": 2,
        "quarantined": 1,
    }
