"""background_tasks as a backend of Django's own tasks framework (django.tasks, Django 6.0+, or
the django-tasks backport on Django 5.2)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests import tasks_framework

if not tasks_framework.AVAILABLE:
    pytest.skip(tasks_framework.SKIP_REASON, allow_module_level=True)

from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from background_tasks import enqueue, registry, signals
from background_tasks.backends import DatabaseBackend, resolve_django_task
from background_tasks.claims import claim_tasks
from background_tasks.exceptions import InvalidTaskArguments
from background_tasks.execution import execute
from background_tasks.models import QUARANTINED, CompletedTask, Task
from background_tasks.operations import cancel_waiting
from background_tasks.testing import run_tasks
from tests.tasks_framework import (
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from tests.testapp import django_tasks as dt
from tests.testapp import tasks as bg_tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db

BACKEND = "background_tasks.backends.DatabaseBackend"
PREFIX = "tests.testapp.django_tasks."


def tasks_setting(**params: Any) -> dict[str, Any]:
    return {"default": {"BACKEND": BACKEND, "QUEUES": [], **params}}


@pytest.fixture(autouse=True)
def _database_backend() -> Iterator[None]:
    with override_settings(TASKS=tasks_setting()):
        yield
    for name in list(registry):
        if name.startswith(PREFIX):
            registry.unregister(name)


class Rollback(Exception):
    pass


class Received:
    """Collect the task results a Django task signal sends."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.senders: list[Any] = []

    def __call__(self, sender: Any, task_result: Any, **kwargs: Any) -> None:
        self.senders.append(sender)
        self.results.append(task_result)


# -- enqueue -----------------------------------------------------------------------------------


def test_enqueue__inserts_a_row_naming_the_task_by_its_module_path() -> None:
    result = dt.add.enqueue(2, b=3)

    row = Task.objects.get()
    assert row.task_name == PREFIX + "add"
    assert row.params == {"args": [2], "kwargs": {"b": 3}}
    assert row.queue == "default"
    assert row.priority == 0
    assert row.run_at == row.created_at
    assert row.max_attempts == 1  # Django's semantics: one attempt unless OPTIONS opt in
    assert result.id == str(row.pk)


def test_enqueue__returns_a_ready_result() -> None:
    result = dt.add.enqueue(2, 3)

    assert result.status == TaskResultStatus.READY
    assert result.task == dt.add
    assert result.args == [2, 3]
    assert result.kwargs == {}
    assert result.backend == "default"
    assert result.enqueued_at is not None
    assert result.started_at is None
    assert result.finished_at is None
    assert result.errors == []
    assert result.worker_ids == []
    assert not result.is_finished
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value


def test_enqueue__writes_in_the_callers_transaction() -> None:
    with pytest.raises(Rollback), transaction.atomic():
        dt.add.enqueue(1, 2)
        assert Task.objects.count() == 1
        raise Rollback

    assert not Task.objects.exists()


def test_enqueue__maps_priority_queue_and_run_after() -> None:
    later = timezone.now() + timedelta(hours=1)

    result = dt.greet.using(priority=-7, queue_name="emails", run_after=later).enqueue("Ada")

    row = Task.objects.get(pk=int(result.id))
    assert (row.priority, row.queue, row.run_at) == (-7, "emails", later)
    assert run_tasks() == 0  # not due yet
    assert run_tasks(now=later + timedelta(seconds=1)) == 1
    assert default_task_backend.get_result(result.id).return_value == "Hello Ada!"


def test_enqueue__higher_priority_runs_first() -> None:
    dt.record.using(priority=-5).enqueue("low")
    dt.record.using(priority=50).enqueue("high")
    dt.record.enqueue("middle")

    run_tasks()

    assert list(TaskRun.objects.order_by("id").values_list("key", flat=True)) == [
        "high",
        "middle",
        "low",
    ]


def test_enqueue__refuses_arguments_that_are_not_json() -> None:
    with pytest.raises(InvalidTaskArguments, match="argument 'a' cannot be stored"):
        dt.add.enqueue(object(), 1)
    with pytest.raises(InvalidTaskArguments, match=r"'b'.*not a finite number"):
        dt.add.enqueue(1, b=float("nan"))
    assert not Task.objects.exists()


def test_enqueue__refuses_arguments_that_do_not_fit_the_function() -> None:
    with pytest.raises(InvalidTaskArguments, match="cannot be called with these arguments"):
        dt.add.enqueue(1)
    with pytest.raises(TypeError):  # InvalidTaskArguments is a TypeError, as Django's are
        dt.knows_its_attempt.enqueue("key", "one too many")
    assert not Task.objects.exists()


def test_enqueue__sends_task_enqueued_with_the_result() -> None:
    received = Received()
    task_enqueued.connect(received)
    try:
        result = dt.add.enqueue(1, 2)
    finally:
        task_enqueued.disconnect(received)

    assert received.senders == [DatabaseBackend]
    assert [r.id for r in received.results] == [result.id]


def test_enqueue__goes_through_the_insert_path_task_created_and_the_wake_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[Task] = []
    woken: list[str] = []
    monkeypatch.setattr(enqueue, "notify_ready", lambda using, queue: woken.append(queue))
    monkeypatch.setattr(enqueue, "notify_clause", lambda using, queue: None)  # none in an INSERT

    def remember(sender: str, task: Task, **kwargs: object) -> None:
        created.append(task)

    signals.task_created.connect(remember, dispatch_uid="test-backend-created")
    try:
        result = dt.add.enqueue(1, 2)
        dt.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(3, 4)
    finally:
        signals.task_created.disconnect(dispatch_uid="test-backend-created")

    assert [str(task.pk) for task in created][:1] == [result.id] and len(created) == 2
    assert woken == ["default"]  # the later task is found by polling when it is due


def test_enqueue__with_immediate_setting_runs_inline_and_writes_no_row() -> None:
    with override_settings(BACKGROUND_TASKS_IMMEDIATE=True):
        result = dt.add.enqueue(20, 22)

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42
    assert not Task.objects.exists()


# -- validation --------------------------------------------------------------------------------


def test_validate__refuses_a_queue_outside_the_configured_queues() -> None:
    with (
        override_settings(TASKS=tasks_setting(QUEUES=["default"])),
        pytest.raises(InvalidTask, match="Queue 'emails' is not valid"),
    ):
        dt.greet.using(queue_name="emails").enqueue("Ada")


def test_validate__refuses_a_queue_name_longer_than_the_column() -> None:
    with pytest.raises(
        InvalidTask, match=r"Queue name .* is refused: it is longer than 100 characters"
    ):
        dt.add.using(queue_name="q" * 101)


def test_validate__refuses_priorities_outside_djangos_range() -> None:
    with pytest.raises(InvalidTask, match="priority must be a whole number"):
        dt.add.using(priority=101)


def test_validate__registers_a_task_defined_for_this_backend() -> None:
    task(dt.add.func)  # as when its module is imported with this backend configured

    assert PREFIX + "add" in registry
    function = registry.get(PREFIX + "add")
    assert function.queue == "default"


def test_validate__accepts_parameters_named_like_background_call_options() -> None:
    dt.options_named_like_ours.enqueue(queue="q", priority=3)
    run_tasks()

    result = default_task_backend.get_result(str(CompletedTask.objects.get().task_id))
    assert result.return_value == "q:3"


def test_options__max_attempts_is_stored_on_each_row() -> None:
    with override_settings(TASKS=tasks_setting(OPTIONS={"MAX_ATTEMPTS": 1})):
        dt.fails.enqueue("once")

    assert Task.objects.get().max_attempts == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"MAX_ATTEMPTS": 0}, "MAX_ATTEMPTS'] must be an integer >= 1"),
        ({"MAX_ATTEMPTS": True}, "MAX_ATTEMPTS'] must be an integer >= 1"),
        ({"RETRIES": 3}, "unknown OPTIONS \\['RETRIES'\\]"),
    ],
)
def test_options__bad_values_are_refused(options: dict[str, Any], message: str) -> None:
    with (
        override_settings(TASKS=tasks_setting(OPTIONS=options)),
        pytest.raises(InvalidTaskBackend, match=message),
    ):
        _ = task_backends["default"]


def test_check__warns_when_priorities_would_run_backwards() -> None:
    assert task_backends["default"].check() == []
    with override_settings(BACKGROUND_TASKS_PRIORITY_ORDERING="ASC"):
        ids = [message.id for message in task_backends["default"].check()]
    assert ids == ["background_tasks.W101"]


# -- running and results -----------------------------------------------------------------------


def test_run__a_successful_task_reports_its_return_value() -> None:
    result = dt.add.enqueue(2, 3)

    assert run_tasks() == 1

    fetched = dt.add.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 5
    assert fetched.is_finished
    assert fetched.args == [2, 3]
    assert fetched.started_at is not None
    assert fetched.finished_at is not None
    assert fetched.finished_at >= fetched.started_at
    assert fetched.attempts == 1
    assert fetched.worker_ids[0].startswith("testing:")
    assert fetched.errors == []

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5


def test_run__a_failing_task_fails_at_its_first_attempt_by_default() -> None:
    result = dt.fails.enqueue("boom")

    assert run_tasks() == 1

    failed = default_task_backend.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.attempts == 1
    assert failed.errors[0].exception_class is ValueError


def test_run__with_max_attempts_opted_in_a_failing_task_is_retried_then_reported_failed() -> None:
    with override_settings(TASKS=tasks_setting(OPTIONS={"MAX_ATTEMPTS": 2})):
        result = dt.fails.enqueue("boom")
    [claimed] = claim_tasks("host:1:first", [], 1)
    started = claimed.locked_at
    execute(claimed, "host:1:first")

    retrying = default_task_backend.get_result(result.id)
    assert retrying.status == TaskResultStatus.READY
    assert retrying.attempts == 1
    assert retrying.worker_ids == ["host:1:first"]
    assert started is not None
    assert retrying.started_at == retrying.last_attempted_at == started
    assert [error.exception_class for error in retrying.errors] == [ValueError]

    Task.objects.update(run_at=timezone.now())
    run_tasks()

    failed = default_task_backend.get_result(result.id)
    assert failed.started_at == started
    assert failed.last_attempted_at is not None
    assert failed.last_attempted_at > started
    assert failed.worker_ids[0] == "host:1:first"
    assert failed.status == TaskResultStatus.FAILED
    assert failed.attempts == 2
    assert failed.errors[0].exception_class is ValueError
    assert "ValueError: boom" in failed.errors[0].traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = failed.return_value


def test_run__max_attempts_option_of_one_runs_a_task_at_most_once() -> None:
    with override_settings(TASKS=tasks_setting(OPTIONS={"MAX_ATTEMPTS": 1})):
        result = dt.fails.enqueue("only once")
        run_tasks()
        assert default_task_backend.get_result(result.id).status == TaskResultStatus.FAILED


def test_run__a_task_claimed_by_a_worker_reports_running() -> None:
    result = dt.add.enqueue(1, 1)
    [claimed] = claim_tasks("host:1:abcd", [], 1)

    running = default_task_backend.get_result(result.id)

    assert running.status == TaskResultStatus.RUNNING
    assert running.worker_ids == ["host:1:abcd"]
    assert running.started_at == claimed.locked_at


def test_run__a_quarantined_task_reports_ready_not_running() -> None:
    result = dt.add.enqueue(1, 1)
    # Set aside (isolation.py), held by no worker: it waits for an operator.
    Task.objects.filter(pk=int(result.id)).update(locked_by=QUARANTINED, locked_at=timezone.now())

    quarantined = default_task_backend.get_result(result.id)

    assert quarantined.status == TaskResultStatus.READY
    assert quarantined.worker_ids == []


def test_run__a_cancelled_task_reports_failed_with_task_cancelled() -> None:
    result = dt.add.enqueue(1, 1)

    cancel_waiting([int(result.id)])

    cancelled = default_task_backend.get_result(result.id)
    assert cancelled.status == TaskResultStatus.FAILED
    assert cancelled.errors[0].exception_class_path == ("background_tasks.exceptions.TaskCancelled")
    assert "Cancelled by an operator." in cancelled.errors[0].traceback


def test_run__a_task_taking_context_sees_its_result_and_attempt() -> None:
    result = dt.knows_its_attempt.enqueue("ctx")

    run_tasks()

    assert default_task_backend.get_result(result.id).return_value == {
        "attempt": 1,
        "id": result.id,
    }


def test_run__a_coroutine_task_runs_to_completion() -> None:
    result = dt.doubles.enqueue(21)

    run_tasks()

    assert default_task_backend.get_result(result.id).return_value == 42


def test_run__a_stored_call_that_no_longer_fits_fails_at_once() -> None:
    result = dt.add.enqueue(1, 2)
    Task.objects.update(params={"args": [1, 2, 3], "kwargs": {}})

    run_tasks()

    failed = default_task_backend.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.attempts == 1  # no retry: the code, not luck, is the problem
    assert failed.errors[0].exception_class_path == "background_tasks.exceptions.PermanentFailure"


def test_run__sends_djangos_started_and_finished_signals() -> None:
    started, finished = Received(), Received()
    task_started.connect(started)
    task_finished.connect(finished)
    try:
        result = dt.add.enqueue(2, 2)
        bg_tasks.no_arguments()  # not a Django Task: no Django signal
        run_tasks()
    finally:
        task_started.disconnect(started)
        task_finished.disconnect(finished)

    assert [(r.id, r.status) for r in started.results] == [(result.id, TaskResultStatus.RUNNING)]
    assert [(r.id, r.status) for r in finished.results] == [
        (result.id, TaskResultStatus.SUCCESSFUL)
    ]
    assert finished.results[0].return_value == 4
    assert started.senders == finished.senders == [DatabaseBackend]


def test_run__a_failing_signal_receiver_does_not_stop_the_outcome() -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    task_finished.connect(broken)
    try:
        result = dt.add.enqueue(2, 2)
        run_tasks()
    finally:
        task_finished.disconnect(broken)

    assert default_task_backend.get_result(result.id).status == TaskResultStatus.SUCCESSFUL


def test_get_result__in_async_code() -> None:
    result = dt.add.enqueue(3, 4)
    run_tasks()

    fetched = async_to_sync(dt.add.aget_result)(result.id)

    assert fetched.return_value == 7


@pytest.mark.parametrize("result_id", ["", "abc", "12abc", "-1", "0", "007", " 1", "1" * 30])
def test_get_result__ids_that_name_no_row_do_not_exist(result_id: str) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result_id)


def test_get_result__of_a_background_task_row_does_not_exist() -> None:
    row = bg_tasks.no_arguments()

    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(row.pk))


@pytest.mark.django_db(transaction=True)
def test_worker__runs_django_tasks_on_its_threads() -> None:
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    results = [
        dt.add.enqueue(1, 2),
        dt.doubles.enqueue(5),
        dt.knows_its_attempt.enqueue("worker"),
        dt.greet.enqueue("Grace"),
    ]
    registry.unregister(PREFIX + "greet")  # a task this process has not registered yet
    try:
        call_command("process_tasks", "--burst", "--sleep", "0.05", "--concurrency", "2")
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)

    fetched = [default_task_backend.get_result(result.id) for result in results]
    assert [r.status for r in fetched] == [TaskResultStatus.SUCCESSFUL] * 4
    assert [r.return_value for r in fetched] == [
        3,
        10,
        {"attempt": 1, "id": results[2].id},
        "Hello Grace!",
    ]


# -- finding the function of a row -------------------------------------------------------------


def test_resolve__a_worker_that_never_saw_the_task_finds_it_by_its_path() -> None:
    result = dt.add.enqueue(5, 6)
    registry.unregister(PREFIX + "add")  # as in a fresh worker process

    run_tasks()

    assert default_task_backend.get_result(result.id).return_value == 11


def test_resolve__returns_the_registered_runner_of_a_django_task() -> None:
    function = resolve_django_task(PREFIX + "add")

    assert function is not None
    assert function.name == PREFIX + "add"
    assert function.func(1, 2) == 3


@pytest.mark.parametrize(
    "name",
    [
        PREFIX + "plain_function",  # not a Task
        PREFIX + "alias_of_add",  # a Task, but defined under another path
        PREFIX + "missing",
        "tests.testapp.no_such_module.task",
        "os.path.join",  # outside the installed apps: never imported
        "tests.testapp.tasks.record",  # a @background task
        "add",
        "tests.testapp.django_tasks.add()",
    ],
)
def test_resolve__refuses_anything_but_a_django_task_at_its_own_path(name: str) -> None:
    assert resolve_django_task(name) is None


def test_resolve__refuses_when_this_backend_is_not_configured() -> None:
    immediate = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    with override_settings(TASKS=immediate):
        assert resolve_django_task(PREFIX + "add") is None


def test_resolve__a_row_naming_a_plain_function_fails_unregistered() -> None:
    Task.objects.create(task_name=PREFIX + "plain_function")

    run_tasks()

    completed = CompletedTask.objects.get()
    assert completed.status == CompletedTask.Status.FAILED
    assert "No task is registered" in completed.last_error
