"""The real ``process_tasks`` command in subprocesses: signals, limits, registry and rescue.

Worker subprocesses read committed rows only, hence ``transaction=True``. Nothing here sleeps to
synchronise: tests wait on rows (``wait_for``) or on the process (``communicate(timeout=...)``).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from background_tasks.models import CompletedTask, Task, Worker
from tests.fixtures import Spawn
from tests.helpers import run_command, wait_for
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db(transaction=True)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

#: Heartbeat and rescue windows short enough for a test, passed to workers via the environment.
QUICK_RESCUE = {
    "BACKGROUND_TASKS_HEARTBEAT_INTERVAL": "0.2",
    "BACKGROUND_TASKS_RESCUE_AFTER": "1.5",
}
START_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0

#: Logged once by every thread-mode worker because the test app has a task with a timeout.
EXPECTED_WARNINGS = ("event=time_limits_not_enforced",)


def wait_while_running(
    condition: Callable[[], object],
    *procs: subprocess.Popen[str],
    timeout: float = START_TIMEOUT,
    message: str = "",
) -> None:
    """``wait_for(condition)``, failing at once with its stderr if a worker process exits."""

    def check() -> object:
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate()
                raise AssertionError(
                    f"worker exited with {proc.returncode} while waiting for {message}:\n{err}"
                )
        return condition()

    wait_for(check, timeout, message=message)


def registered(proc: subprocess.Popen[str]) -> Worker:
    """Wait until the worker process has its Worker row (its signal handlers are then in place)."""
    rows = Worker.objects.filter(host=socket.gethostname(), pid=proc.pid)
    wait_while_running(rows.exists, proc, message=f"worker {proc.pid} to register")
    return rows.get()


def started(key: str, proc: subprocess.Popen[str]) -> None:
    """Wait until ``started_then_sleeps(key, ...)`` has begun running in the worker."""
    rows = TaskRun.objects.filter(key=f"{key}:started")
    wait_while_running(rows.exists, proc, message=f"task {key!r} to start")


def stop(
    proc: subprocess.Popen[str], timeout: float = EXIT_TIMEOUT, expected: tuple[str, ...] = ()
) -> str:
    """SIGTERM the worker, wait for it to exit cleanly, and return its stderr."""
    proc.send_signal(signal.SIGTERM)
    return exited_cleanly(proc, timeout, expected)


def exited_cleanly(
    proc: subprocess.Popen[str], timeout: float = EXIT_TIMEOUT, expected: tuple[str, ...] = ()
) -> str:
    """Wait for the worker to exit with code 0; assert its stderr (warnings and up) holds
    nothing but ``EXPECTED_WARNINGS`` and ``expected``; return it."""
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit code {proc.returncode}:\n{err}"
    allowed = EXPECTED_WARNINGS + expected
    unexpected = [
        line
        for line in err.splitlines()
        if line.strip() and not any(text in line for text in allowed)
    ]
    assert unexpected == [], err
    return err


def runs(key: str) -> int:
    return TaskRun.objects.filter(key=key).count()


# -- shutdown ----------------------------------------------------------------------------------


@posix_only
def test_sigterm__lets_the_running_task_finish_then_exits_cleanly(spawn: Spawn) -> None:
    task = tasks.started_then_sleeps("graceful", 2.0)
    proc = spawn("--sleep", "0.1", "--shutdown-grace", "30")
    started("graceful", proc)
    assert runs("graceful:done") == 0

    stop(proc)

    assert runs("graceful:started") == 1
    assert runs("graceful:done") == 1
    completed = CompletedTask.objects.get(task_id=task.pk)
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert completed.attempts == 1
    assert not Task.objects.exists()
    assert not Worker.objects.exists()


@posix_only
def test_sigterm__releases_a_task_that_outlasts_the_grace_period(spawn: Spawn) -> None:
    task = tasks.started_then_sleeps("released", 60.0)
    proc = spawn("--sleep", "0.1", "--shutdown-grace", "0.5")
    started("released", proc)
    held = Task.objects.get(pk=task.pk)
    assert held.locked_by is not None
    assert held.attempts == 1

    began = time.monotonic()
    stop(proc, timeout=20)

    assert time.monotonic() - began < 20  # it did not wait for the 60 s task
    released = Task.objects.get(pk=task.pk)
    assert released.locked_by is None
    assert released.locked_at is None
    assert released.attempts == 0  # a clean stop does not count the attempt
    assert released.last_error == ""
    assert not CompletedTask.objects.exists()
    assert runs("released:done") == 0
    assert not Worker.objects.exists()


@posix_only
def test_second_sigterm__exits_at_once_with_code_1(spawn: Spawn) -> None:
    task = tasks.started_then_sleeps("forced", 60.0)
    proc = spawn("--sleep", "0.1", "--shutdown-grace", "60")
    started("forced", proc)
    worker = registered(proc)

    proc.send_signal(signal.SIGTERM)
    # The first signal only stops claiming: the task has 60 s of grace left. (This wait also
    # keeps the two signals apart: two that arrive before Python runs the handler count as one.)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.communicate(timeout=1.0)

    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)

    assert time.monotonic() - began < 10
    assert proc.returncode == 1, err
    assert "event=worker_forced_exit" in err
    assert "Traceback" not in err, err
    # A forced exit releases nothing: the task stays held until a rescue hands it on.
    held = Task.objects.get(pk=task.pk)
    assert held.locked_by == worker.id
    assert not CompletedTask.objects.exists()
    assert runs("forced:done") == 0


# -- limits ------------------------------------------------------------------------------------


def test_duration__exits_cleanly_by_itself() -> None:
    began = time.monotonic()
    result = run_command("process_tasks", "--duration", "1", "--sleep", "0.1", timeout=60)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert time.monotonic() - began >= 1
    assert not Worker.objects.exists()


def test_max_tasks__processes_exactly_that_many_then_exits_cleanly() -> None:
    for index in range(5):
        tasks.record(f"budget-{index}")

    result = run_command("process_tasks", "--max-tasks", "3", "--sleep", "0.1", timeout=60)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert TaskRun.objects.count() == 3
    assert CompletedTask.objects.succeeded().count() == 3
    assert Task.objects.count() == 2
    assert not Task.objects.locked().exists()
    # Run order is run_at, then id: the first three enqueued ran.
    assert set(TaskRun.objects.values_list("key", flat=True)) == {f"budget-{i}" for i in range(3)}
    assert not Worker.objects.exists()


# -- worker registry ---------------------------------------------------------------------------


@posix_only
def test_worker_row__describes_the_process_is_refreshed_and_removed_on_exit(spawn: Spawn) -> None:
    before = timezone.now()
    proc = spawn(
        "--queue",
        "alpha",
        "--queue",
        "beta",
        "--concurrency",
        "2",
        "--sleep",
        "0.1",
        env=QUICK_RESCUE,
    )
    worker = registered(proc)

    assert worker.host == socket.gethostname()
    assert worker.pid == proc.pid
    assert worker.queues == ["alpha", "beta"]
    assert worker.concurrency == 2
    assert worker.started_at >= before - timedelta(seconds=1)
    first_beat = worker.last_heartbeat_at
    wait_while_running(
        Worker.objects.filter(pk=worker.pk, last_heartbeat_at__gt=first_beat).exists,
        proc,
        timeout=10,
        message="a heartbeat",
    )

    stop(proc)

    assert not Worker.objects.filter(pk=worker.pk).exists()


# -- leases and rescue -------------------------------------------------------------------------


@posix_only
def test_rescue__a_dead_workers_task_is_released_with_an_error_and_runs_again(spawn: Spawn) -> None:
    stale = timezone.now() - timedelta(minutes=10)
    ghost = Worker.objects.create(
        id="ghost-host:4242:deadbeef",
        host="ghost-host",
        pid=4242,
        queues=[],
        concurrency=1,
        started_at=stale,
        last_heartbeat_at=stale,
    )
    task = tasks.fails_until("rescued", 0)
    # Also a row held by a worker id with no Worker row at all (one that never registered).
    orphan = tasks.fails_until("orphaned", 0)
    holders = {task.pk: ghost.id, orphan.pk: "never-registered:1:x"}
    for pk, holder in holders.items():
        Task.objects.filter(pk=pk).update(locked_by=holder, locked_at=stale, attempts=1)

    proc = spawn("--sleep", "0.1", env=QUICK_RESCUE)
    wait_while_running(
        lambda: CompletedTask.objects.filter(task_id__in=[task.pk, orphan.pk]).count() == 2,
        proc,
        message="both lost tasks to be rescued and run",
    )
    stop(proc, expected=("event=task_rescued", "event=task_failed"))

    for pk, key in [(task.pk, "rescued"), (orphan.pk, "orphaned")]:
        completed = CompletedTask.objects.get(task_id=pk)
        assert completed.status == CompletedTask.Status.SUCCEEDED
        assert completed.attempts == 2  # the lost attempt counts
        assert completed.last_error.startswith("Worker lost")
        assert holders[pk] in completed.last_error
        assert runs(key) == 1
    assert not Worker.objects.filter(pk=ghost.pk).exists()
    assert not Task.objects.exists()


@posix_only
def test_rescue__never_takes_a_healthy_workers_task_however_long_it_runs(spawn: Spawn) -> None:
    first = spawn("--sleep", "0.1", env=QUICK_RESCUE)
    second = spawn("--sleep", "0.1", env=QUICK_RESCUE)
    registered(first)
    registered(second)

    # Over two rescue windows long, while the other worker looks for lost tasks every 0.2 s.
    task = tasks.started_then_sleeps("long", 4.0)
    wait_while_running(
        CompletedTask.objects.filter(task_id=task.pk).exists,
        first,
        second,
        message="the long task to finish",
    )
    assert Worker.objects.count() == 2  # neither worker was given up for lost

    stop(first)
    stop(second)

    assert runs("long:started") == 1
    assert runs("long:done") == 1
    completed = CompletedTask.objects.get(task_id=task.pk)
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert completed.attempts == 1
    assert completed.last_error == ""


@posix_only
def test_rescue__never_takes_a_task_a_stopping_worker_is_finishing(spawn: Spawn) -> None:
    """The shutdown grace may exceed the rescue window: the stopping worker is still healthy."""
    # The other worker serves another queue, so only the first one can run the task, but it
    # still rescues the tasks of any worker whose heartbeat goes stale.
    first = spawn("--sleep", "0.1", "--shutdown-grace", "30", env=QUICK_RESCUE)
    second = spawn("--sleep", "0.1", "--queue", "elsewhere", env=QUICK_RESCUE)
    registered(first)
    registered(second)
    task = tasks.started_then_sleeps("finishing", 4.0)
    started("finishing", first)
    assert runs("finishing:done") == 0

    # The first worker finishes the task within its 30 s grace, over two rescue windows later.
    first.send_signal(signal.SIGTERM)
    exited_cleanly(first)
    stop(second)

    assert runs("finishing:started") == 1
    assert runs("finishing:done") == 1
    completed = CompletedTask.objects.get(task_id=task.pk)
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert completed.attempts == 1
    assert completed.last_error == ""
