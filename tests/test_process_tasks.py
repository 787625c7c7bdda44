"""``process_tasks`` run in process with ``--burst``, its option checks, and the testing helpers.

The worker runs tasks on threads with their own database connections, so tests that run it
commit their rows (``transaction=True``).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from background_tasks.models import CompletedTask, Task, Worker
from background_tasks.testing import run_tasks
from tests.helpers import run_command
from tests.testapp import tasks
from tests.testapp.models import TaskRun

committed = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """Undo what the command does to the process: signal handlers and --log-std logging."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    logger = logging.getLogger("background_tasks")
    log_handlers, log_level, log_propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    logger.handlers[:] = log_handlers
    logger.setLevel(log_level)
    logger.propagate = log_propagate


def process_tasks(*args: str) -> None:
    call_command("process_tasks", "--sleep", "0.05", *args)


def ran() -> set[str]:
    return set(TaskRun.objects.values_list("key", flat=True))


# -- running tasks ------------------------------------------------------------------------------


@committed
def test_burst__runs_every_ready_task_then_exits() -> None:
    tasks.record("a")
    tasks.record("b")
    later = tasks.record("later", schedule=3600)

    process_tasks("--burst")

    assert ran() == {"a", "b"}
    assert CompletedTask.objects.succeeded().count() == 2
    assert list(Task.objects.values_list("pk", flat=True)) == [later.pk]
    assert not Worker.objects.exists()  # the worker unregistered on the way out


@committed
def test_burst__records_failures_and_carries_on() -> None:
    tasks.fails_permanently()
    Task.objects.create(task_name="tests.removed_long_ago")
    tasks.record("after the failures")

    process_tasks("--burst")

    assert ran() == {"after the failures"}
    assert CompletedTask.objects.failed().count() == 2
    assert not Task.objects.exists()


@committed
def test_queue__repeated_runs_only_the_named_queues() -> None:
    for queue in ("one", "two", "three"):
        tasks.record(queue, queue=queue)

    process_tasks("--burst", "--queue", "one", "--queue", "two")

    assert ran() == {"one", "two"}
    assert list(Task.objects.values_list("queue", flat=True)) == ["three"]


@committed
def test_max_tasks__stops_after_that_many_tasks_in_burst_mode() -> None:
    for key in ("a", "b", "c"):
        tasks.record(key)

    process_tasks("--burst", "--max-tasks", "2")

    assert len(ran()) == 2
    assert Task.objects.count() == 1


@committed
def test_max_tasks__stops_a_worker_that_would_otherwise_keep_polling() -> None:
    for key in ("a", "b", "c"):
        tasks.record(key)

    # Without --max-tasks this would run all three, then poll until the duration ends.
    process_tasks("--max-tasks", "1", "--duration", "60")

    assert len(ran()) == 1
    assert Task.objects.count() == 2


@committed
def test_concurrency__two_runs_two_tasks_at_the_same_time() -> None:
    # Each task waits (up to 10 s) for the other to start: only concurrent runs both succeed.
    first = tasks.meets_another("pair")
    second = tasks.meets_another("pair")

    process_tasks("--burst", "--concurrency", "2")

    statuses = dict(CompletedTask.objects.values_list("task_id", "status"))
    assert statuses == {first.pk: "succeeded", second.pk: "succeeded"}


@committed
def test_log_std__writes_the_log_to_stdout_and_warnings_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tasks.record("logged")
    tasks.fails_permanently()

    process_tasks("--burst", "--log-std")

    out, err = capsys.readouterr()
    assert "event=worker_started" in out
    assert "event=task_succeeded task=tests.testapp.tasks.record" in out
    assert "event=worker_stopped" in out
    assert "event=task_failed task=tests.testapp.tasks.fails_permanently" in err
    assert "event=task_failed" not in out


@committed
def test_log_std__with_verbosity_2__adds_the_debug_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tasks.record("logged")

    process_tasks("--burst", "--log-std", "--verbosity", "2")

    assert "event=task_started task=tests.testapp.tasks.record" in capsys.readouterr().out


@committed
def test_log_std__with_verbosity_0__writes_only_warnings_and_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tasks.record("logged")
    tasks.fails_permanently()

    process_tasks("--burst", "--log-std", "--verbosity", "0")

    out, err = capsys.readouterr()
    assert out == ""
    assert "event=task_failed task=tests.testapp.tasks.fails_permanently" in err


@committed
def test_without_log_std__nothing_is_written_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    tasks.record("quiet")

    process_tasks("--burst")

    assert capsys.readouterr().out == ""


# -- bad options: refused before any database work ---------------------------------------------
# These tests have no database access: a command that touched the database would fail with
# pytest-django's "Database access not allowed" instead of the CommandError expected here.


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "argument --concurrency: expected a whole number >= 1, got '0'"),
        (
            ["--concurrency", "two"],
            "argument --concurrency: expected a whole number >= 1, got 'two'",
        ),
        (["--sleep", "-1"], "argument --sleep: expected a finite number of seconds >= 0, got '-1'"),
        (["--sleep", "abc"], "argument --sleep: expected a number of seconds, got 'abc'"),
        (["--sleep", "nan"], "argument --sleep: expected a finite number of seconds >= 0"),
        (["--max-tasks", "0"], "argument --max-tasks: expected a whole number >= 1, got '0'"),
        (["--queue", ""], "argument --queue: a queue name cannot be empty"),
        (["--queue", "  "], "argument --queue: a queue name cannot be empty"),
        (["--duration", "-5"], "argument --duration: expected a finite number of seconds >= 0"),
        (["--processes", "2", "--concurrency", "2"], "--processes and --concurrency cannot be"),
        (
            ["--log-file", "worker.log"],
            "argument --log-file: django-background-tasks' --log-file is not supported: "
            "configure the 'background_tasks' logger in LOGGING",
        ),
        (
            ["--log-level", "INFO"],
            "argument --log-level: django-background-tasks' --log-level is not supported",
        ),
    ],
)
def test_bad_option__fails_with_a_clear_message_before_touching_the_database(
    args: list[str], message: str
) -> None:
    with pytest.raises(CommandError) as error:
        call_command("process_tasks", "--burst", *args)

    assert message in str(error.value)


@pytest.mark.django_db
def test_bad_option__from_the_command_line_exits_with_a_usage_error() -> None:
    result = run_command("process_tasks", "--concurrency", "0")

    assert result.returncode == 2
    assert "argument --concurrency: expected a whole number >= 1, got '0'" in result.stderr
    assert "Traceback" not in result.stderr


# -- testing helpers ----------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(BACKGROUND_TASKS_IMMEDIATE=True)
def test_immediate__runs_the_call_inline_and_writes_no_row() -> None:
    task = tasks.send_newsletter((1, 2), template="now")  # type: ignore[arg-type]

    assert tasks.CALLS == [(([1, 2],), {"template": "now"})]  # as a worker would see it
    assert task.pk is None
    assert task.task_name == "tests.testapp.tasks.send_newsletter"
    assert not Task.objects.exists()
    assert not CompletedTask.objects.exists()


@pytest.mark.django_db
@override_settings(BACKGROUND_TASKS_IMMEDIATE=True)
def test_immediate__still_refuses_arguments_that_are_not_json() -> None:
    with pytest.raises(TypeError, match="cannot be stored"):
        tasks.send_newsletter({1, 2})  # type: ignore[arg-type]

    assert tasks.CALLS == []


@pytest.mark.django_db
def test_run_tasks__runs_ready_tasks_in_the_tests_transaction_and_counts_them() -> None:
    tasks.record("a")
    tasks.record("b")

    assert run_tasks() == 2

    assert ran() == {"a", "b"}
    assert run_tasks() == 0


@pytest.mark.django_db
def test_run_tasks__only_runs_the_given_queues() -> None:
    tasks.record("mail", queue="mail")
    tasks.record("other", queue="other")

    assert run_tasks(queues=["mail"]) == 1

    assert ran() == {"mail"}


@pytest.mark.django_db
def test_run_tasks__now_runs_tasks_scheduled_up_to_then() -> None:
    tasks.record("soon", schedule=60)
    tasks.record("much later", schedule=3600)

    assert run_tasks(now=timezone.now() + timedelta(minutes=2)) == 1

    assert ran() == {"soon"}


@pytest.mark.django_db
def test_run_tasks__runs_retries_that_become_ready_while_it_runs() -> None:
    tasks.fails_until("twice", failures=1)  # retried at once (backoff=0)

    assert run_tasks() == 2

    assert CompletedTask.objects.get().status == CompletedTask.Status.SUCCEEDED


@pytest.mark.django_db
def test_run_tasks__max_tasks_bounds_the_number_of_runs() -> None:
    tasks.always_fails()  # three attempts, each ready at once

    assert run_tasks(max_tasks=2) == 2

    assert Task.objects.get().attempts == 2
