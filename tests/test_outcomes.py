"""What happens to a claimed task: success, retry, giving up, cancellation and bad rows.

Tasks run in process with ``run_tasks`` (or ``claim_tasks`` + ``execute`` where the test needs
the worker id or the returned outcome).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db import DataError, transaction
from django.dispatch import Signal
from django.test import override_settings
from django.utils import timezone

from background_tasks import lifecycle, operations, signals
from background_tasks.claims import claim_tasks
from background_tasks.execution import execute
from background_tasks.models import CompletedTask, Task
from background_tasks.outcomes import Outcome
from background_tasks.serialization import params_hash
from background_tasks.testing import run_tasks
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db

WORKER = "tests:worker"


@dataclass
class Sent:
    signal: str
    sender: str
    kwargs: dict[str, Any]


@pytest.fixture
def sent() -> Iterator[list[Sent]]:
    """Record every task signal sent during the test, in order."""
    record: list[Sent] = []
    names = [
        "task_created",
        "task_started",
        "task_succeeded",
        "task_failed",
        "task_gave_up",
        "task_cancelled",
    ]
    receivers = []
    for name in names:
        signal: Signal = getattr(signals, name)

        def receiver(sender: str, _name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal")
            record.append(Sent(_name, sender, kwargs))

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    yield record
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def run_one(task: Task) -> str | None:
    """Claim ``task`` as WORKER (it must be the only ready one) and execute it."""
    claimed = claim_tasks(WORKER, [], 1)
    assert [t.pk for t in claimed] == [task.pk]
    return execute(claimed[0], WORKER)


def completed_of(task: Task) -> CompletedTask:
    return CompletedTask.objects.get(task_id=task.pk)


# -- success ------------------------------------------------------------------------------------


def test_success__moves_the_task_to_completed_with_its_result_and_timings() -> None:
    task = tasks.send_newsletter(7, template="monthly")

    assert run_one(task) is Outcome.SUCCEEDED

    completed = completed_of(task)
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert completed.result == "sent monthly to 7"
    assert completed.worker == WORKER
    assert completed.attempts == 1
    assert completed.task_name == "tests.testapp.tasks.send_newsletter"
    assert completed.params == {"args": [7], "kwargs": {"template": "monthly"}}
    assert completed.queue == "emails"
    assert completed.started_at is not None
    assert completed.started_at <= completed.finished_at
    assert completed.last_error == ""
    assert not Task.objects.filter(pk=task.pk).exists()


def test_success__a_result_that_is_not_json_is_not_stored_but_the_task_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = tasks.returns_set()

    assert run_one(task) is Outcome.SUCCEEDED

    completed = completed_of(task)
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert completed.result is None
    assert "event=result_not_stored" in caplog.text


@override_settings(BACKGROUND_TASKS_STORE_RESULTS=False)
def test_success__results_are_not_kept_when_store_results_is_off() -> None:
    task = tasks.send_newsletter(7)

    run_one(task)

    assert completed_of(task).result is None


# -- retries ------------------------------------------------------------------------------------


def test_failure__counts_the_attempt_keeps_the_traceback_and_retries_after_the_backoff() -> None:
    task = tasks.fails_with_default_backoff()
    before = timezone.now()

    assert run_one(task) is Outcome.RETRY

    after = timezone.now()
    task.refresh_from_db()
    assert task.attempts == 1
    assert task.locked_by is None
    assert task.locked_at is None
    assert "Traceback (most recent call last)" in task.last_error
    assert "RuntimeError: fails with the default retry policy" in task.last_error
    # Default backoff after the first attempt: 1 ** 4 + 5 = 6 s, give or take 10 % jitter.
    assert before + timedelta(seconds=5.4) <= task.run_at <= after + timedelta(seconds=6.6)
    assert not CompletedTask.objects.exists()


def test_failure__each_retry_waits_longer() -> None:
    task = tasks.fails_with_default_backoff()
    run_one(task)
    task.refresh_from_db()

    before = timezone.now()
    assert run_tasks(now=task.run_at) == 1
    after = timezone.now()

    task.refresh_from_db()
    assert task.attempts == 2
    # 2 ** 4 + 5 = 21 s, give or take 10 %.
    assert before + timedelta(seconds=18.9) <= task.run_at <= after + timedelta(seconds=23.1)


def test_failure__a_task_that_fails_then_works_succeeds_on_a_later_attempt() -> None:
    task = tasks.fails_until("flaky", failures=2)

    assert run_tasks() == 3

    completed = completed_of(task)
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert completed.attempts == 3
    assert completed.result == "ok"
    assert "ValueError: failure flaky" in completed.last_error  # the error of the last failure
    assert TaskRun.objects.filter(key="flaky").count() == 3


def test_failure__gives_up_after_max_attempts() -> None:
    task = tasks.always_fails()

    assert run_tasks() == 3

    completed = completed_of(task)
    assert completed.status == CompletedTask.Status.FAILED
    assert completed.attempts == 3
    assert "RuntimeError: boom" in completed.last_error
    assert not Task.objects.exists()


@pytest.mark.parametrize(("attempts_before", "outcome"), [(23, "retry"), (24, "gave_up")])
def test_failure__the_default_budget_is_25_attempts(attempts_before: int, outcome: str) -> None:
    task = tasks.fails_with_default_backoff()
    Task.objects.filter(pk=task.pk).update(attempts=attempts_before)

    assert run_one(task) == outcome


@override_settings(BACKGROUND_TASKS_MAX_ATTEMPTS=2)
def test_failure__the_max_attempts_setting_changes_the_default_budget() -> None:
    task = tasks.fails_with_default_backoff()
    Task.objects.filter(pk=task.pk).update(attempts=1)

    assert run_one(task) is Outcome.GAVE_UP


def test_failure__a_max_attempts_set_on_the_row_beats_the_task_option() -> None:
    task = tasks.always_fails()  # the task allows 3
    Task.objects.filter(pk=task.pk).update(max_attempts=1)

    assert run_one(task) is Outcome.GAVE_UP


def test_failure__a_task_backoff_function_sets_the_delay() -> None:
    task = tasks.fails_with_linear_backoff()
    before = timezone.now()

    assert run_one(task) is Outcome.RETRY

    after = timezone.now()
    task.refresh_from_db()
    assert before + timedelta(seconds=60) <= task.run_at <= after + timedelta(seconds=60)


def test_failure__a_broken_backoff_function_still_records_the_attempt_with_the_default_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = tasks.fails_with_broken_backoff()
    before = timezone.now()

    assert run_one(task) is Outcome.RETRY

    after = timezone.now()
    task.refresh_from_db()
    assert task.locked_by is None
    assert "RuntimeError: the task's own error" in task.last_error
    assert before + timedelta(seconds=5.4) <= task.run_at <= after + timedelta(seconds=6.6)
    assert "a bug in the backoff function" in caplog.text


def test_failure__system_exit_in_a_task_is_a_failed_attempt_not_an_exit() -> None:
    task = tasks.exits()

    assert run_one(task) is Outcome.RETRY

    task.refresh_from_db()
    assert task.attempts == 1
    assert "SystemExit: 3" in task.last_error


def test_failure__a_nul_character_in_the_error_is_escaped_so_the_failure_can_be_stored() -> None:
    task = tasks.fails_with_nul_in_message()

    assert run_one(task) is Outcome.GAVE_UP

    assert "ValueError: bad input: a\\x00b" in completed_of(task).last_error


def test_success__a_result_with_a_nul_character_is_not_stored_but_the_task_succeeds() -> None:
    task = tasks.returns_nul()

    assert run_one(task) is Outcome.SUCCEEDED

    completed = completed_of(task)
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert completed.result is None


# -- giving up at once --------------------------------------------------------------------------


def test_permanent_failure__fails_at_once_without_retries() -> None:
    task = tasks.fails_permanently()

    assert run_tasks() == 1

    completed = completed_of(task)
    assert completed.status == CompletedTask.Status.FAILED
    assert completed.attempts == 1
    assert "PermanentFailure: the input is wrong; retrying will not help" in completed.last_error


def test_unregistered_task__fails_at_once_with_a_clear_message_and_the_worker_carries_on() -> None:
    ghost = Task.objects.create(
        task_name="tests.removed_long_ago", run_at=timezone.now() - timedelta(seconds=1)
    )
    good = tasks.no_arguments()

    assert run_tasks() == 2

    failed = completed_of(ghost)
    assert failed.status == CompletedTask.Status.FAILED
    assert failed.attempts == 1
    assert "No task is registered as 'tests.removed_long_ago'" in failed.last_error
    assert completed_of(good).status == CompletedTask.Status.SUCCEEDED
    assert tasks.CALLS == [((), {})]


def test_unregistered_task__an_importable_function_is_never_imported_and_run() -> None:
    row = Task.objects.create(task_name="os.getcwd")

    assert run_tasks() == 1

    failed = completed_of(row)
    assert failed.status == CompletedTask.Status.FAILED
    assert failed.result is None
    assert "No task is registered as 'os.getcwd'" in failed.last_error


def test_params_that_no_longer_fit__fail_at_once_without_calling_the_function() -> None:
    row = Task.objects.create(
        task_name=tasks.send_newsletter.name, params={"args": [], "kwargs": {"user": 7}}
    )

    assert run_tasks() == 1

    failed = completed_of(row)
    assert failed.status == CompletedTask.Status.FAILED
    assert "cannot be called with these arguments" in failed.last_error
    assert "user" in failed.last_error
    assert tasks.CALLS == []


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"positional": [1]}, id="unknown-key"),
        pytest.param({"args": "7", "kwargs": {}}, id="args-not-a-list"),
        pytest.param({"args": [], "kwargs": [1]}, id="kwargs-not-an-object"),
        pytest.param("{not json", id="not-json"),
        pytest.param([1, 2, 3], id="a-list"),
        pytest.param(42, id="a-number"),
    ],
)
def test_malformed_params__fail_at_once_with_a_message_about_the_parameters(params: object) -> None:
    row = Task.objects.create(task_name=tasks.send_newsletter.name, params=params)

    assert run_tasks() == 1

    failed = completed_of(row)
    assert failed.status == CompletedTask.Status.FAILED
    assert failed.attempts == 1
    assert "parameters" in failed.last_error
    assert tasks.CALLS == []


# -- rows created by hand -----------------------------------------------------------------------


def test_hand_made_row__with_only_a_name_and_a_run_time_runs() -> None:
    row = Task.objects.create(task_name=tasks.no_arguments.name, run_at=timezone.now())

    assert run_tasks() == 1

    assert tasks.CALLS == [((), {})]
    assert completed_of(row).status == CompletedTask.Status.SUCCEEDED


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"args": [5], "kwargs": {"template": "hand"}}, id="args-and-kwargs"),
        pytest.param({"args": [5, "hand"]}, id="kwargs-left-out"),
        pytest.param([[5], {"template": "hand"}], id="django-background-tasks-form"),
        pytest.param('{"args": [5], "kwargs": {"template": "hand"}}', id="json-text"),
    ],
)
def test_hand_made_row__accepts_the_documented_params_forms(params: object) -> None:
    row = Task.objects.create(
        task_name=tasks.send_newsletter.name, params=params, run_at=timezone.now()
    )

    assert run_tasks() == 1

    assert tasks.CALLS == [((5,), {"template": "hand"})]
    assert completed_of(row).result == "sent hand to 5"


def test_hand_made_row__gets_a_task_hash() -> None:
    row = Task.objects.create(task_name=tasks.no_arguments.name)

    assert row.task_hash == tasks.no_arguments().task_hash


# -- cancellation -------------------------------------------------------------------------------


def test_cancelled__a_task_raising_task_cancelled_is_recorded_as_cancelled() -> None:
    task = tasks.cancels_itself()

    assert run_one(task) is Outcome.CANCELLED

    completed = completed_of(task)
    assert completed.status == CompletedTask.Status.CANCELLED
    assert completed.last_error == "nothing to do any more"


def test_cancelled__a_task_returning_after_a_cancel_request_is_recorded_as_cancelled() -> None:
    task = tasks.stops_when_cancelled()

    assert run_one(task) is Outcome.CANCELLED

    completed = completed_of(task)
    assert completed.status == CompletedTask.Status.CANCELLED
    assert completed.result is None


def test_cancel_waiting__cancels_waiting_tasks_and_skips_running_ones() -> None:
    waiting = tasks.record("waiting")
    running = tasks.record("running")
    Task.objects.filter(pk=running.pk).update(locked_by="someone-else", locked_at=timezone.now())

    assert operations.cancel_waiting([waiting.pk, running.pk]) == (1, 1)

    assert completed_of(waiting).status == CompletedTask.Status.CANCELLED
    assert Task.objects.filter(pk=running.pk, locked_by="someone-else").exists()


# -- fencing ------------------------------------------------------------------------------------


def test_fence__a_success_is_dropped_when_the_row_was_handed_to_another_worker() -> None:
    task = tasks.loses_its_row("succeed")

    assert run_one(task) is None

    assert not CompletedTask.objects.exists()
    assert Task.objects.get(pk=task.pk).locked_by == "tests:rescuer"


def test_fence__a_failure_is_dropped_when_the_row_was_handed_to_another_worker() -> None:
    task = tasks.loses_its_row("fail")

    assert run_one(task) is None

    row = Task.objects.get(pk=task.pk)
    assert row.locked_by == "tests:rescuer"
    assert row.last_error == ""
    assert row.attempts == 1


def test_fence__a_cancellation_is_dropped_when_the_row_was_handed_to_another_worker() -> None:
    task = tasks.loses_its_row("cancel")

    assert run_one(task) is None

    assert not CompletedTask.objects.exists()
    assert Task.objects.get(pk=task.pk).locked_by == "tests:rescuer"


@pytest.mark.parametrize("record", ["success", "failure", "give_up", "cancel"])
def test_fence__no_outcome_is_written_by_a_worker_that_does_not_hold_the_row(
    record: str, sent: list[Sent]
) -> None:
    tasks.record("k")
    (task,) = claim_tasks(WORKER, [], 1)
    sent.clear()

    if record == "success":
        assert lifecycle.record_success(task, "another-worker", None) is None
    elif record == "failure":
        assert lifecycle.record_failure(task, "another-worker", "err", None) is None
    elif record == "give_up":
        assert lifecycle.record_failure(task, "another-worker", "err", None, permanent=True) is None
    else:
        assert lifecycle.record_cancelled(task, "another-worker") is None

    row = Task.objects.get(pk=task.pk)
    assert (row.locked_by, row.last_error, row.attempts) == (WORKER, "", 1)
    assert not CompletedTask.objects.exists()
    assert sent == []


# -- repeating tasks ----------------------------------------------------------------------------


def test_repeat__a_successful_run_schedules_the_next_one_a_step_later() -> None:
    first = tasks.record("tick", repeat=Task.HOURLY)

    assert run_tasks() == 1

    assert completed_of(first).status == CompletedTask.Status.SUCCEEDED
    follower = Task.objects.get()
    assert follower.pk != first.pk
    assert follower.run_at == first.run_at + timedelta(hours=1)
    assert follower.params == first.params
    assert follower.repeat == 3600 == Task.HOURLY
    assert follower.attempts == 0
    assert follower.locked_by is None


def test_repeat__no_next_run_after_repeat_until() -> None:
    start = timezone.now()
    first = tasks.record("tick", repeat=Task.HOURLY, repeat_until=start + timedelta(minutes=30))

    assert run_tasks() == 1

    assert completed_of(first).status == CompletedTask.Status.SUCCEEDED
    assert not Task.objects.exists()


def test_repeat__a_retry_keeps_the_series_on_its_grid() -> None:
    first = tasks.fails_until("grid", failures=1, repeat=Task.DAILY)
    due = Task.objects.get(pk=first.pk).run_at

    assert run_tasks() == 2  # one failure, one success

    follower = Task.objects.get()
    assert follower.run_at == due + timedelta(days=1)


# -- signals ------------------------------------------------------------------------------------


def test_signals__a_task_that_works_sends_created_started_and_succeeded(sent: list[Sent]) -> None:
    task = tasks.send_newsletter(3)
    run_one(task)

    assert [s.signal for s in sent] == ["task_created", "task_started", "task_succeeded"]
    assert {s.sender for s in sent} == {"tests.testapp.tasks.send_newsletter"}
    created, started, succeeded = sent
    assert created.kwargs["task"].pk == task.pk
    assert started.kwargs["task"].pk == task.pk
    assert started.kwargs["worker_id"] == WORKER
    assert succeeded.kwargs["result"] == "sent weekly to 3"
    assert succeeded.kwargs["completed"] == completed_of(task)


def test_signals__every_failed_attempt_sends_failed_and_the_last_gave_up(sent: list[Sent]) -> None:
    task = tasks.always_fails()
    run_tasks()

    failed = [s for s in sent if s.signal == "task_failed"]
    assert [s.kwargs["will_retry"] for s in failed] == [True, True, False]
    assert all(isinstance(s.kwargs["exception"], RuntimeError) for s in failed)
    assert all("RuntimeError: boom" in s.kwargs["traceback"] for s in failed)
    assert all(s.kwargs["task"].pk == task.pk for s in failed)
    (gave_up,) = [s for s in sent if s.signal == "task_gave_up"]
    assert gave_up.kwargs["task"].pk == task.pk
    assert gave_up.kwargs["completed"] == completed_of(task)
    assert gave_up.kwargs["exception"] is failed[-1].kwargs["exception"]
    assert [s.signal for s in sent][-2:] == ["task_failed", "task_gave_up"]


def test_signals__an_unregistered_task_gives_up_with_the_lookup_error(sent: list[Sent]) -> None:
    Task.objects.create(task_name="tests.removed_long_ago")
    run_tasks()

    (gave_up,) = [s for s in sent if s.signal == "task_gave_up"]
    assert gave_up.sender == "tests.removed_long_ago"
    assert isinstance(gave_up.kwargs["exception"], LookupError)


def test_signals__a_cancelled_task_sends_cancelled(sent: list[Sent]) -> None:
    task = tasks.cancels_itself()
    run_one(task)

    assert [s.signal for s in sent] == ["task_created", "task_started", "task_cancelled"]
    assert sent[-1].kwargs["completed"] == completed_of(task)


def test_signals__nothing_is_sent_for_an_outcome_that_was_dropped(sent: list[Sent]) -> None:
    run_one(tasks.loses_its_row("succeed"))

    assert [s.signal for s in sent] == ["task_created", "task_started"]


@pytest.mark.parametrize("through", ["plain_sql", "orm"])
def test_archive__a_record_without_task_hash_gets_it_and_an_overlong_value_is_not_cut(
    through: str,
) -> None:
    """The plain statements store what the ORM would: they fill an empty task_hash, as
    ``save()`` does, and leave an overlong text value to the column (refused, or kept whole
    where the column does not check its length), never cut short."""
    from django.db.models.signals import pre_save

    def noop(**kwargs: object) -> None:
        pass

    if through == "orm":
        pre_save.connect(noop, sender=CompletedTask, dispatch_uid="test-orm-path")
    try:
        task = Task.objects.create(
            task_name="tests.testapp.tasks.record",
            params={"args": ["k"], "kwargs": {}},
            run_at=timezone.now(),
            locked_by="w:1:a",
            locked_at=timezone.now(),
        )
        Task.objects.filter(pk=task.pk).update(task_hash="")
        task.task_hash = ""
        record = lifecycle.archive(task, CompletedTask.Status.SUCCEEDED, "w:1:a")
        assert record is not None
        saved = CompletedTask.objects.get(pk=record.pk)
        assert saved.task_hash == params_hash(task.task_name, task.params)

        long = Task.objects.create(
            task_name="tests.testapp.tasks.record",
            params={"args": ["k"], "kwargs": {}},
            run_at=timezone.now(),
            locked_by="w:1:a",
            locked_at=timezone.now(),
        )
        try:
            with transaction.atomic():
                kept = lifecycle.archive(
                    long, CompletedTask.Status.FAILED, "w:1:a", error_class="x" * 300
                )
        except DataError:
            assert Task.objects.filter(pk=long.pk).exists()  # refused: nothing written
        else:
            assert kept is not None
            assert len(CompletedTask.objects.get(pk=kept.pk).error_class) == 300
    finally:
        pre_save.disconnect(sender=CompletedTask, dispatch_uid="test-orm-path")
