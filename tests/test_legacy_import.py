"""``background_tasks import-legacy``: copying django-background-tasks' tables into ours.

Its tables are created from its own migration files (django-background-tasks 1.2.8, a test
extra), applied to this test database without installing its app, whose models would otherwise
share our test run's app registry.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from io import StringIO
from typing import Any
from unittest import mock

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.state import ProjectState

from background_tasks import signals
from background_tasks.legacy_import import import_legacy
from background_tasks.models import CompletedTask, LegacyImport, Task
from background_tasks.testing import run_tasks
from tests.testapp import tasks

pytestmark = pytest.mark.django_db

LEGACY_MIGRATIONS = ("0001_initial", "0002_auto_20170927_1109")
RUN_AT = datetime(2026, 5, 1, 12, 0, tzinfo=dt_timezone.utc)
NEWSLETTER = "tests.testapp.tasks.send_newsletter"


@pytest.fixture(scope="module")
def legacy_state(django_db_setup: None, django_db_blocker: Any) -> Iterator[ProjectState]:
    """Create ``background_task`` and ``background_task_completedtask`` from its migrations."""
    pytest.importorskip("background_task", reason="django-background-tasks is a test extra")
    with django_db_blocker.unblock():
        state = MigrationLoader(connection).project_state()
        with connection.schema_editor() as editor:
            for name in LEGACY_MIGRATIONS:
                module = importlib.import_module(f"background_task.migrations.{name}")
                state = module.Migration(name, "background_task").apply(state, editor)
        try:
            yield state
        finally:
            with connection.schema_editor() as editor:
                for model in ("completedtask", "task"):
                    editor.delete_model(state.apps.get_model("background_task", model))


@pytest.fixture
def legacy(legacy_state: ProjectState) -> Any:
    """The legacy models, as its migrations define them, for inserting source rows."""

    class Models:
        Task = legacy_state.apps.get_model("background_task", "Task")
        CompletedTask = legacy_state.apps.get_model("background_task", "CompletedTask")

    return Models


def legacy_row(model: Any, args: list[Any], kwargs: dict[str, Any], **fields: Any) -> Any:
    """Insert a row the way django-background-tasks' TaskManager.new_task() writes it."""
    fields.setdefault("task_name", NEWSLETTER)
    fields.setdefault("run_at", RUN_AT)
    fields.setdefault("task_hash", "0" * 40)
    fields.setdefault("task_params", json.dumps((args, kwargs), sort_keys=True))
    return model.objects.create(**fields)


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("background_tasks", "import-legacy", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_import__copies_a_waiting_task_with_everything_it_had(legacy: Any) -> None:
    user_type = ContentType.objects.get_for_model(LegacyImport)
    source = legacy_row(
        legacy.Task,
        [7],
        {"template": "daily"},
        priority=5,
        queue="mail",
        verbose_name="Daily for 7",
        repeat=86400,  # its Task.DAILY
        repeat_until=RUN_AT + timedelta(days=30),
        attempts=2,
        last_error="Traceback: boom",
        creator_content_type_id=user_type.pk,
        creator_object_id=12,
    )

    out, err = run()

    task = Task.objects.get()
    assert (task.task_name, task.params) == (
        NEWSLETTER,
        {"args": [7], "kwargs": {"template": "daily"}},
    )
    assert (task.run_at, task.priority, task.queue, task.verbose_name) == (
        RUN_AT,
        5,
        "mail",
        "Daily for 7",
    )
    assert (task.repeat, task.repeat_until) == (Task.DAILY, RUN_AT + timedelta(days=30))
    assert (task.attempts, task.last_error) == (2, "Traceback: boom")
    assert (task.creator_content_type_id, task.creator_object_id) == (user_type.pk, "12")
    assert task.locked_by is None
    assert LegacyImport.objects.get().source_id == source.pk
    assert "Imported 1 waiting task(s) and 0 history record(s)" in out and err == ""


def test_import__a_null_queue_becomes_the_task_s_queue_and_the_task_runs(legacy: Any) -> None:
    legacy_row(legacy.Task, [3], {}, queue=None, run_at=RUN_AT - timedelta(days=1))

    run()

    task = Task.objects.get()
    assert task.queue == "emails"  # send_newsletter's own queue
    assert run_tasks(now=RUN_AT) == 1
    assert tasks.CALLS == [((3,), {"template": "weekly"})]


def test_import__run_twice_copies_nothing_twice_even_after_the_tasks_ran(legacy: Any) -> None:
    legacy_row(legacy.Task, [1], {})
    legacy_row(legacy.Task, [2], {})
    run()
    run_tasks(now=RUN_AT)
    assert Task.objects.count() == 0

    out, _ = run()

    assert Task.objects.count() == 0
    assert "Imported 0 waiting task(s)" in out and "2 row(s) were imported before" in out


def test_import__reports_unknown_names_and_bad_json_and_copies_the_rest(legacy: Any) -> None:
    good = legacy_row(legacy.Task, [1], {})
    gone = legacy_row(legacy.Task, [], {}, task_name="app.tasks.removed")
    broken = legacy_row(legacy.Task, [], {}, task_params="[[1], {")
    shape = legacy_row(legacy.Task, [], {}, task_params='{"args": [1]}')
    misfit = legacy_row(legacy.Task, [1, 2, 3, 4], {})

    with pytest.raises(CommandError, match="4 row"):
        run()

    assert list(Task.objects.values_list("params", flat=True)) == [{"args": [1], "kwargs": {}}]
    assert LegacyImport.objects.get().source_id == good.pk
    # Left in the source table, so a second run after a fix copies them.
    assert legacy.Task.objects.count() == 5
    out = StringIO()
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("background_tasks", "import-legacy", stdout=out, stderr=err)
    lines = err.getvalue().splitlines()
    assert lines[0] == (
        f"Not imported: background_task {gone.pk} (app.tasks.removed): "
        "no task is registered as 'app.tasks.removed'"
    )
    assert f"background_task {broken.pk} " in lines[1] and "not valid JSON" in lines[1]
    assert f"background_task {shape.pk} " in lines[2] and "not [[args], {kwargs}]" in lines[2]
    assert f"background_task {misfit.pk} " in lines[3]
    assert "1 row(s) were imported before" in out.getvalue()


def test_import_dry_run__reports_and_writes_nothing(legacy: Any) -> None:
    legacy_row(legacy.Task, [1], {})
    legacy_row(legacy.Task, [], {}, task_name="app.tasks.removed")

    report = import_legacy(dry_run=True)

    assert (report.tasks, len(report.problems)) == (1, 1)
    assert Task.objects.count() == 0 and LegacyImport.objects.count() == 0


def test_import__a_task_a_legacy_worker_held_is_copied_as_waiting_and_reported(legacy: Any) -> None:
    source = legacy_row(legacy.Task, [1], {}, locked_by="4242", locked_at=RUN_AT)

    out, _ = run()

    assert Task.objects.get().locked_by is None
    assert "held by a django-background-tasks worker" in out and str(source.pk) in out


def test_import_history__copies_completed_tasks_as_succeeded_or_failed(legacy: Any) -> None:
    finished = RUN_AT + timedelta(minutes=5)
    ok = legacy_row(
        legacy.CompletedTask, [1], {}, run_at=finished, attempts=1, locked_by="99", locked_at=RUN_AT
    )
    bad = legacy_row(
        legacy.CompletedTask,
        [2],
        {},
        task_name="app.tasks.removed",
        run_at=finished,
        attempts=25,
        failed_at=finished,
        last_error="boom",
    )

    run()
    assert CompletedTask.objects.count() == 0  # history only when asked

    run("--history")

    records = {r.params["args"][0]: r for r in CompletedTask.objects.all()}
    assert records[1].status == "succeeded" and records[2].status == "failed"
    assert (records[1].finished_at, records[1].started_at, records[1].worker) == (
        finished,
        RUN_AT,
        "99",
    )
    assert (records[2].task_name, records[2].attempts, records[2].last_error) == (
        "app.tasks.removed",
        25,
        "boom",
    )
    assert {i.source_id for i in LegacyImport.objects.filter(target_model="completedtask")} == {
        ok.pk,
        bad.pk,
    }
    run("--history")
    assert CompletedTask.objects.count() == 2


def test_import__failed_tasks_older_versions_kept_in_the_queue_go_to_history_only_when_asked(
    legacy: Any,
) -> None:
    legacy_row(legacy.Task, [1], {}, failed_at=RUN_AT, attempts=25)

    out, _ = run()
    assert Task.objects.count() == 0 and "had given up; left there" in out

    run("--history")
    assert CompletedTask.objects.get().status == "failed"


def test_import__without_the_legacy_tables_says_so() -> None:
    tables = [
        t for t in connection.introspection.table_names() if not t.startswith("background_task")
    ]
    with (
        mock.patch.object(connection.introspection, "table_names", return_value=tables),
        pytest.raises(CommandError, match=r"Neither background_task nor .* nothing to import"),
    ):
        run()


def test_import_record_problems__keeps_rows_that_cannot_be_queued_as_failed_records(
    legacy: Any,
) -> None:
    legacy_row(legacy.Task, [1], {})
    gone = legacy_row(legacy.Task, [5], {}, task_name="app.tasks.removed")
    broken = legacy_row(legacy.Task, [], {}, task_params="[[1], {")

    out, err = run("--record-problems")

    assert Task.objects.count() == 1
    records = {r.task_name: r for r in CompletedTask.objects.all()}
    assert records["app.tasks.removed"].status == "failed"
    assert records["app.tasks.removed"].last_error == (
        f"Not imported from background_task {gone.pk}: no task is registered as "
        "'app.tasks.removed'.\n\nIts task_params: [[5], {}]"
    )
    assert records[NEWSLETTER].last_error.endswith("Its task_params: [[1], {")
    assert f"background_task {broken.pk} " in err and err.startswith("Recorded as failed: ")
    assert "(2 of them for rows that could not be queued)" in out and "0 row(s) left" in out

    out, err = run("--record-problems")
    assert CompletedTask.objects.count() == 2 and err == ""
    assert "3 row(s) were imported before" in out


def test_import__a_unique_task_already_queued_here_is_not_queued_twice(legacy: Any) -> None:
    queued = tasks.unique_record("nightly")
    first = legacy_row(legacy.Task, ["nightly"], {}, task_name="tests.unique_record")
    other = legacy_row(legacy.Task, ["weekly"], {}, task_name="tests.unique_record")

    out, _ = run()

    assert sorted(Task.objects.values_list("params", flat=True), key=str) == [
        {"args": ["nightly"], "kwargs": {}},
        {"args": ["weekly"], "kwargs": {}},
    ]
    assert LegacyImport.objects.get(source_id=first.pk).target_id == queued.pk
    assert Task.objects.get(pk=LegacyImport.objects.get(source_id=other.pk).target_id).unique_key
    assert f"already queued with the same arguments; not copied again: {first.pk}" in out
    again, _ = run()
    assert "2 row(s) were imported before" in again and Task.objects.count() == 2


def test_import__sends_task_created_for_each_task_it_queues_but_not_for_history(
    legacy: Any,
) -> None:
    sent: list[Task] = []

    def remember(sender: str, task: Task, **kwargs: object) -> None:
        sent.append(task)

    legacy_row(legacy.Task, [1], {})
    legacy_row(legacy.CompletedTask, [2], {})
    signals.task_created.connect(remember, dispatch_uid="test-import-created")
    try:
        run("--history")
    finally:
        signals.task_created.disconnect(dispatch_uid="test-import-created")

    assert [task.pk for task in sent] == [Task.objects.get().pk]
    assert CompletedTask.objects.count() == 1
