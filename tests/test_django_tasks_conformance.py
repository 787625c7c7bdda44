"""The backend keeps the django.tasks contract, as Django's own test suite checks its backends.

Modelled on what Django's tests assert for the built-in backends (validation errors, results
that compare equal however they are fetched, signals, ``takes_context``, async tasks), with the
tasks run by real ``process_tasks`` subprocesses. Runs on Django 6.x (``django.tasks``) and on
Django 5.2 with the ``django-tasks`` backport, on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests import tasks_framework

if not tasks_framework.AVAILABLE:
    pytest.skip(tasks_framework.SKIP_REASON, allow_module_level=True)

from asgiref.sync import async_to_sync
from django.test import override_settings
from django.utils import timezone

from background_tasks import registry
from background_tasks.models import Task, Worker
from tests.helpers import run_command, start_worker, wait_for, worker_env
from tests.tasks_framework import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task,
)
from tests.testapp import conformance_tasks as ct
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = {"default": {"BACKEND": "background_tasks.backends.DatabaseBackend", "QUEUES": []}}


@pytest.fixture(autouse=True)
def _database_backend() -> Iterator[None]:
    with override_settings(TASKS=TASKS):
        yield
    for name in list(registry):
        if name.startswith(ct.PREFIX):
            registry.unregister(name)


def env() -> dict[str, str]:
    return worker_env(BACKGROUND_TASKS_TEST_DJANGO_TASKS="1")


def process_tasks() -> None:
    """Run ``process_tasks --burst`` as a subprocess until the queue is empty."""
    result = run_command("process_tasks", "--burst", env=env())
    assert result.returncode == 0, result.stderr


def fetched(result_id: str) -> tuple[Any, Any]:
    """The result as ``get_result()`` and as ``aget_result()`` return it."""
    return (
        default_task_backend.get_result(result_id),
        async_to_sync(default_task_backend.aget_result)(result_id),
    )


def signals_of(result_id: str) -> list[str]:
    keys = TaskRun.objects.filter(key__contains=f":{result_id}:").order_by("id")
    return [key.replace(f":{result_id}:", ":") for key in keys.values_list("key", flat=True)]


# -- validation --------------------------------------------------------------------------------


def test_validation__a_priority_outside_djangos_range_is_refused() -> None:
    for priority in (-101, 101):
        with pytest.raises(InvalidTask, match="priority"):
            ct.add.using(priority=priority)


def test_validation__an_unknown_queue_is_refused() -> None:
    limited = {"default": {**TASKS["default"], "QUEUES": ["default"]}}
    with override_settings(TASKS=limited), pytest.raises(InvalidTask, match="Queue"):
        ct.add.using(queue_name="unknown")


def test_validation__a_naive_run_after_is_refused() -> None:
    with pytest.raises(InvalidTask, match="aware"):
        ct.add.using(run_after=datetime(2030, 1, 1, 12, 0))


def test_validation__a_function_not_at_module_level_is_refused() -> None:
    def nested() -> None: ...

    with pytest.raises(InvalidTask, match="module level"):
        task(nested)


def test_validation__arguments_json_cannot_hold_are_refused_and_nothing_is_written() -> None:
    with pytest.raises(TypeError):
        ct.add.enqueue(object(), 1)
    with pytest.raises(TypeError):
        ct.add.enqueue(1, b={1: "integer keys come back as strings"})
    assert not Task.objects.exists()


def test_get_result__an_unknown_id_raises_task_result_does_not_exist() -> None:
    for result_id in ("123456", "not-a-number"):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(result_id)


# -- results, at every status, through the real worker -----------------------------------------


def test_ready__get_result_and_aget_result_equal_what_enqueue_returned() -> None:
    now_result = ct.add.enqueue(1, 2)
    past_result = ct.add.using(run_after=timezone.now() - timedelta(hours=1)).enqueue(3, 4)
    future_result = ct.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(5, 6)

    for result in (now_result, past_result, future_result):
        assert result.status == TaskResultStatus.READY
        assert fetched(result.id) == (result, result)
        assert (result.worker_ids, result.errors, result.started_at) == ([], [], None)
    assert past_result.task.run_after is not None


def test_successful__the_worker_runs_it_and_every_read_of_the_result_agrees() -> None:
    result = ct.add.enqueue(2, b=40)

    process_tasks()

    got, agot = fetched(result.id)
    result.refresh()
    assert result.status == got.status == TaskResultStatus.SUCCESSFUL
    assert result == got == agot
    assert got.return_value == 42
    assert got.enqueued_at is not None and got.started_at is not None
    assert got.finished_at is not None and got.last_attempted_at is not None
    assert got.enqueued_at <= got.started_at <= got.finished_at
    assert got.attempts == len(got.worker_ids) == 1
    assert got.errors == []


def test_failed__a_task_that_raises_fails_at_its_only_attempt_with_its_exception() -> None:
    result = ct.fails.enqueue("boom")

    process_tasks()

    got, agot = fetched(result.id)
    result.refresh()
    assert result == got == agot
    assert got.status == TaskResultStatus.FAILED
    assert got.attempts == 1
    assert got.errors[0].exception_class is ValueError
    assert "ValueError: boom" in got.errors[0].traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = got.return_value


def test_failed__a_return_value_json_cannot_hold_fails_with_type_error() -> None:
    result = ct.returns_a_set.enqueue()

    process_tasks()

    got, agot = fetched(result.id)
    assert got == agot
    assert got.status == TaskResultStatus.FAILED
    assert got.errors[0].exception_class is TypeError
    assert "Unsupported type" in got.errors[0].traceback
    assert Task.objects.count() == 0  # not retried


def test_running__a_result_read_while_the_worker_runs_it_says_so() -> None:
    result = ct.waits_for_release.enqueue("conf-running")
    worker = start_worker(["--burst"], env=env())
    try:
        wait_for(lambda: TaskRun.objects.filter(key="conf-running:started").exists())

        got, agot = fetched(result.id)
        assert got == agot
        assert got.status == TaskResultStatus.RUNNING
        assert got.started_at is not None
        assert got.last_attempted_at == got.started_at
        assert got.worker_ids == [Worker.objects.get().id]
        assert got.finished_at is None
    finally:
        TaskRun.objects.create(key="conf-running:release")
        _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert default_task_backend.get_result(result.id).return_value == "released"


# -- signals, context, async -------------------------------------------------------------------


def test_signals__enqueued_started_and_finished_are_sent_with_the_result() -> None:
    succeeded = ct.add.enqueue(1, 1)
    failed = ct.fails.enqueue("signal")

    process_tasks()

    assert signals_of(succeeded.id) == [
        "enqueued:READY",
        "started:RUNNING",
        "finished:SUCCESSFUL",
    ]
    assert signals_of(failed.id) == ["enqueued:READY", "started:RUNNING", "finished:FAILED"]


def test_takes_context__the_task_gets_its_attempt_and_its_result() -> None:
    result = ct.knows_its_context.enqueue("ctx")

    process_tasks()

    got = default_task_backend.get_result(result.id)
    assert got.status == TaskResultStatus.SUCCESSFUL
    assert got.return_value == {
        "key": "ctx",
        "attempt": 1,
        "id": result.id,
        "worker_ids": got.worker_ids,
    }
    assert got.args == ["ctx"]


def test_async_task__the_worker_awaits_it() -> None:
    result = ct.doubles.enqueue(21)

    process_tasks()

    got, agot = fetched(result.id)
    assert got == agot
    assert got.status == TaskResultStatus.SUCCESSFUL
    assert got.return_value == 42


def test_aenqueue__enqueues_from_async_code() -> None:
    result = async_to_sync(ct.add.aenqueue)(20, 22)

    assert fetched(result.id) == (result, result)
    process_tasks()
    assert default_task_backend.get_result(result.id).return_value == 42
