"""Tasks that never end, and workers that grow: hand-backs are counted, memory is capped.

A task still running when its worker stops is handed back uncounted only ``MAX_HANDBACKS``
times; after that each hand-back is a failed attempt, so the task gives up in the end.
``--max-memory`` makes a worker stop between tasks once its resident memory passes the limit:
in thread mode it exits with code 3 for the process manager to restart it, in process mode the
supervisor replaces the child.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from django.test import override_settings

from background_tasks import lifecycle
from background_tasks.claims import claim_tasks
from background_tasks.exit_codes import EXIT_MEMORY_LIMIT
from background_tasks.models import CompletedTask, Task
from tests.helpers import REPO_ROOT, manage_command, wait_for, worker_env
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db(transaction=True)


def claim_one() -> Task:
    [claimed] = claim_tasks("w1", [], 1)
    return claimed


@override_settings(BACKGROUND_TASKS_MAX_HANDBACKS=1)
def test_hand_back__free_up_to_max_handbacks_then_each_counts_as_a_failed_attempt() -> None:
    task = tasks.never_returns("-")  # max_attempts=2, backoff=0

    assert lifecycle.hand_back([claim_one()], "w1") == 1
    task.refresh_from_db()
    assert (task.locked_by, task.attempts, task.handbacks, task.last_error) == (None, 0, 1, "")

    assert lifecycle.hand_back([claim_one()], "w1") == 0
    task.refresh_from_db()
    assert (task.locked_by, task.attempts, task.handbacks) == (None, 1, 2)
    assert "hand-back 2; only the first 1 are free" in task.last_error

    assert lifecycle.hand_back([claim_one()], "w1") == 0
    assert not Task.objects.exists()
    completed = CompletedTask.objects.get(task_id=task.pk)
    assert completed.status == CompletedTask.Status.FAILED
    assert (completed.attempts, completed.handbacks) == (2, 3)
    assert "hand-back 3" in completed.last_error


def test_release__a_task_that_never_started_goes_back_without_a_hand_back() -> None:
    task = tasks.never_returns("-")

    assert lifecycle.release([claim_one()], "w1") == 1

    task.refresh_from_db()
    assert (task.locked_by, task.attempts, task.handbacks) == (None, 0, 0)


def _run_until_started_then_stop(runs: Path, starts: int, tmp_path: Path) -> tuple[int, str]:
    log = tmp_path / f"worker-{starts}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            manage_command(
                "process_tasks", "--log-std", "--sleep", "0.1", "--shutdown-grace", "0.2"
            ),
            env=worker_env(BACKGROUND_TASKS_MAX_HANDBACKS="1"),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: len(runs.read_text().splitlines()) >= starts, 60, message="a start")
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=30), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_poison_task__a_task_that_never_returns_gives_up_after_its_free_hand_backs(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "starts.txt"
    runs.touch()
    task = tasks.never_returns(str(runs))  # max_attempts=2, backoff=0

    # MAX_HANDBACKS=1: the first stop is free, the next two count, and 2 attempts is all it has.
    for starts in (1, 2, 3):
        code, log = _run_until_started_then_stop(runs, starts, tmp_path)
        assert code == 0, log
        assert "Traceback" not in log, log

    completed = CompletedTask.objects.get(task_id=task.pk)
    assert completed.status == CompletedTask.Status.FAILED
    assert (completed.attempts, completed.handbacks) == (2, 3)
    assert "Still running when its worker stopped" in completed.last_error
    assert not Task.objects.exists()


MB = 150  # the limit; a Django test worker starts well below it
LEAK = 250


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        manage_command(
            "process_tasks", "--log-std", "--sleep", "0.1", "--max-memory", str(MB), *args
        ),
        env=worker_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_max_memory__thread_mode_stops_after_the_task_that_grew_it_with_exit_code_3() -> None:
    leaker = tasks.leaks_memory(LEAK)
    tasks.record("after-the-leak")

    result = _run()  # not --burst: only the memory limit ends it

    output = result.stdout + result.stderr
    assert result.returncode == EXIT_MEMORY_LIMIT, output
    assert "event=memory_limit_reached" in output and f"limit_mb={MB}" in output
    assert CompletedTask.objects.get(task_id=leaker.pk).status == CompletedTask.Status.SUCCEEDED
    # Recycled between tasks: the next one was not claimed, and waits for the fresh worker.
    waiting = Task.objects.get(task_name=tasks.record.name)
    assert (waiting.locked_by, waiting.attempts) == (None, 0)
    assert not TaskRun.objects.exists()
    assert "Traceback" not in output, output


def test_max_memory__process_mode_replaces_the_grown_child_and_goes_on() -> None:
    leaker = tasks.leaks_memory(LEAK)
    after = tasks.record("after-the-leak")

    result = _run("--processes", "1", "--burst")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "event=memory_limit_reached" in output
    assert "exit_code=3" in output
    assert "child_crash_loop" not in output  # replaced at once, not backed off as a crash
    leaked = CompletedTask.objects.get(task_id=leaker.pk)
    recorded = CompletedTask.objects.get(task_id=after.pk)
    assert leaked.status == recorded.status == CompletedTask.Status.SUCCEEDED
    assert leaked.worker != recorded.worker  # the second ran in the new child
    assert TaskRun.objects.filter(key="after-the-leak").count() == 1
