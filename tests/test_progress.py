"""Progress reporting: set_progress() in a task, rate-limited writes, progress() by task id."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import reverse

import background_tasks
from background_tasks import background, set_progress
from background_tasks.models import CompletedTask, Task
from background_tasks.operations import retry_completed
from background_tasks.task_progress import Progress, ProgressReporter, progress
from background_tasks.testing import run_tasks

pytestmark = pytest.mark.django_db

WORKER = "host:1:progress"


@background(name="tests.progress.count_to")
def count_to(n: int) -> None:
    for i in range(1, n + 1):
        set_progress(i, n, f"row {i}")


@background(name="tests.progress.fails_halfway", max_attempts=3, backoff=0)
def fails_halfway() -> None:
    set_progress(1, 10, "first")
    set_progress(5, 10, "halfway")
    raise RuntimeError("boom")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def held_task(**fields: Any) -> Task:
    fields.setdefault("task_name", "tests.progress.count_to")
    fields.setdefault("params", {"args": [3], "kwargs": {}})
    fields.setdefault("locked_by", WORKER)
    return Task.objects.create(**fields)


def progress_writes(queries: CaptureQueriesContext) -> int:
    return sum(
        1
        for query in queries.captured_queries
        # In the SET clause: a claim returns the progress columns too, it does not write them.
        if query["sql"].startswith("UPDATE") and "progress_done" in query["sql"].split(" WHERE ")[0]
    )


def test_reporter__writes_at_most_once_per_interval_however_often_it_is_called() -> None:
    task = held_task()
    clock = FakeClock()
    reporter = ProgressReporter(task, WORKER, interval=2.0, clock=clock)

    with CaptureQueriesContext(connection) as queries:
        for i in range(100):
            clock.now = i * 0.019  # 100 calls within 1.9 s
            reporter.report(i, 1000)

    assert progress_writes(queries) == 1
    assert Task.objects.get(pk=task.pk).progress_done == 0  # the first call's value

    clock.now = 2.0
    reporter.report(100, 1000, "halfway")

    row = Task.objects.get(pk=task.pk)
    assert (row.progress_done, row.progress_total, row.progress_message) == (100, 1000, "halfway")
    assert reporter.writes == 2


def test_reporter__flush_writes_the_last_unwritten_value_and_nothing_when_all_is_written() -> None:
    task = held_task()
    clock = FakeClock()
    reporter = ProgressReporter(task, WORKER, interval=60.0, clock=clock)
    reporter.report(1, 10)
    reporter.report(7, 10, "almost")

    assert Task.objects.get(pk=task.pk).progress_done == 1
    reporter.flush()
    assert Task.objects.get(pk=task.pk).progress_done == 7

    with CaptureQueriesContext(connection) as queries:
        reporter.flush()
    assert progress_writes(queries) == 0


def test_reporter__writes_nothing_to_a_row_another_worker_holds_now() -> None:
    task = held_task(locked_by="host:2:rescuer")

    ProgressReporter(task, WORKER, interval=0.0).report(5, 10)

    assert Task.objects.get(pk=task.pk).progress_done is None


def test_reporter__cuts_a_long_message_and_escapes_nul() -> None:
    task = held_task()

    ProgressReporter(task, WORKER, interval=0.0).report(1, 2, "a\x00" + "x" * 400)

    message = Task.objects.get(pk=task.pk).progress_message
    assert message.startswith("a\\x00x") and len(message) == 255


@pytest.mark.parametrize(
    ("done", "total", "error"),
    [(-1, 10, ValueError), (1.5, 10, TypeError), (True, 10, TypeError), (1, -3, ValueError)],
)
def test_reporter__refuses_counts_that_are_not_whole_numbers_from_zero(
    done: Any, total: Any, error: type[Exception]
) -> None:
    reporter = ProgressReporter(held_task(), WORKER)

    with pytest.raises(error, match="set_progress"):
        reporter.report(done, total)


def test_set_progress__outside_a_task_does_nothing() -> None:
    with CaptureQueriesContext(connection) as queries:
        set_progress(1, 2, "inline")
    assert queries.captured_queries == []


@override_settings(BACKGROUND_TASKS_PROGRESS_INTERVAL=3600)
def test_set_progress__in_a_task_costs_one_write_and_the_last_value_is_kept_in_its_record() -> None:
    task = count_to(50)

    with CaptureQueriesContext(connection) as queries:
        assert run_tasks() == 1

    # The first call, then the last value when the task ends: not one write per call.
    assert progress_writes(queries) == 2
    record = CompletedTask.objects.get(task_id=task.pk)
    assert (record.progress_done, record.progress_total, record.progress_message) == (
        50,
        50,
        "row 50",
    )


@override_settings(BACKGROUND_TASKS_PROGRESS_INTERVAL=3600)
def test_set_progress__a_failed_attempt_that_will_retry_keeps_its_last_value_in_the_row() -> None:
    task = fails_halfway()

    run_tasks(max_tasks=1)

    row = Task.objects.get(pk=task.pk)
    assert row.locked_by is None and row.attempts == 1  # waiting for its retry
    assert (row.progress_done, row.progress_message) == (5, "halfway")


def test_progress__reads_a_finished_task_from_its_record() -> None:
    task = count_to(4)
    run_tasks()

    found = progress(task.pk)

    assert found is not None
    assert (found.status, found.finished, found.done, found.total, found.fraction) == (
        "succeeded",
        True,
        4,
        4,
        1.0,
    )
    assert found.message == "row 4"
    assert found.updated_at is not None


def test_progress__of_a_waiting_task_has_no_values_yet_and_of_an_unknown_id_is_none() -> None:
    task = count_to(3)

    assert progress(task.pk) == Progress(
        task_id=task.pk, status="waiting", done=None, total=None, message="", updated_at=None
    )
    assert progress(task.pk + 1000) is None


def test_progress__of_a_running_task_shows_what_it_wrote() -> None:
    task = held_task()
    ProgressReporter(task, WORKER, interval=0.0).report(3, 12, "importing")

    found = progress(task.pk)

    assert found is not None
    assert (found.status, found.done, found.total, found.fraction) == ("running", 3, 12, 0.25)
    assert found.as_dict()["message"] == "importing"


def test_progress__is_exported_from_the_package() -> None:
    assert background_tasks.progress is progress
    assert background_tasks.set_progress is set_progress


def test_retry_of_a_completed_task__starts_without_the_old_progress() -> None:
    task = count_to(2)
    run_tasks()
    record = CompletedTask.objects.get(task_id=task.pk)

    fresh = retry_completed(record)

    fresh.refresh_from_db()
    assert (fresh.progress_done, fresh.progress_total, fresh.progress_at) == (None, None, None)


def test_cli_show__prints_the_progress_of_a_task() -> None:
    task = held_task()
    ProgressReporter(task, WORKER, interval=0.0).report(3, 12, "importing")
    out = StringIO()

    call_command("background_tasks", "show", str(task.pk), "--json", stdout=out)

    data = json.loads(out.getvalue())
    assert (data["progress_done"], data["progress_total"], data["progress_message"]) == (
        3,
        12,
        "importing",
    )


def test_admin_task_list__shows_a_progress_bar_with_the_message(admin_client: Client) -> None:
    task = held_task()
    ProgressReporter(task, WORKER, interval=0.0).report(3, 12, "<b>rows</b>")

    page = admin_client.get(reverse("admin:background_tasks_task_changelist"))
    detail = admin_client.get(reverse("admin:background_tasks_task_change", args=[task.pk]))

    for response in (page, detail):
        html = response.content.decode()
        assert '<progress value="3" max="12"></progress> 3 / 12' in html
        assert "&lt;b&gt;rows&lt;/b&gt;" in html
