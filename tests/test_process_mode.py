"""Process mode (``process_tasks --processes N``): the supervisor and its children, for real.

Each test runs the real command in a subprocess, and kills what is left of it and of its
children at the end, whatever happened (children share the supervisor's pipes: reading them to
the end needs every child gone). Worker subprocesses read committed rows only, hence
``transaction=True``. Nothing sleeps to synchronise: tests wait on rows (``wait_for``) or on the
process (``communicate(timeout=...)``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from background_tasks.models import CompletedTask, Task, Worker
from tests import dburl
from tests.fixtures import Spawn, Spawner
from tests.helpers import run_command, wait_for, worker_env
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups"),
]

START_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0


def _child_pids(pid: int) -> set[int]:
    """Return the pids of the processes whose parent is ``pid`` (read from Linux's /proc)."""
    children: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (command) state ppid ...": the command may hold spaces and parentheses.
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            children.add(int(stat.parent.name))
    return children


def _kill_all(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the supervisor and its children (each child runs in a session of its own)."""
    children: set[int] = set()
    if proc.poll() is None:
        # Once the supervisor is gone, its children stop by themselves (they watch it).
        children = _child_pids(proc.pid)
        # Child worker ids start with the supervisor's: host:pid:.
        prefix = f"{socket.gethostname()}:{proc.pid}:"
        children |= set(Worker.objects.filter(id__startswith=prefix).values_list("pid", flat=True))
    # The group: the supervisor and its helpers (multiprocessing's resource tracker).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def spawn(transactional_db: None) -> Iterator[Spawn]:
    """Start ``process_tasks`` in a new session; kill what is left of it at the end.

    Depending on ``transactional_db`` makes this teardown run before the database is flushed.
    The shared ``spawn``, but the supervisor's children and helpers are killed with it.
    """
    spawner = Spawner(("--log-std", "--sleep", "0.1"), kill=_kill_all, start_new_session=True)
    try:
        yield spawner
    finally:
        # Reaps the supervisor; returns once every child closed its pipes.
        spawner.close()


def wait_while_running(
    proc: subprocess.Popen[str],
    condition: Callable[[], object],
    message: str,
    timeout: float = START_TIMEOUT,
) -> None:
    """Wait for ``condition``; fail at once, with the supervisor's output, if it exits."""

    def check() -> object:
        if proc.poll() is not None:
            _kill_all(proc)
            out, err = proc.communicate(timeout=EXIT_TIMEOUT)
            raise AssertionError(
                f"supervisor exited with {proc.returncode} before {message}:\n{out}\n{err}"
            )
        return condition()

    wait_for(check, timeout, message=message)


def exited(
    proc: subprocess.Popen[str], code: int = 0, timeout: float = EXIT_TIMEOUT
) -> tuple[str, str]:
    """Wait for the supervisor (and so its children) to exit with ``code``; return its output."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == code, f"exit code {proc.returncode}:\n{out}\n{err}"
    assert "Traceback" not in err, err
    return out, err


def stop(proc: subprocess.Popen[str], timeout: float = EXIT_TIMEOUT) -> tuple[str, str]:
    """SIGTERM the supervisor and wait for a clean exit; return its output."""
    proc.send_signal(signal.SIGTERM)
    return exited(proc, 0, timeout)


def runs(key: str) -> int:
    return TaskRun.objects.filter(key=key).count()


def started(key: str) -> Callable[[], bool]:
    return lambda: TaskRun.objects.filter(key=f"{key}:started").exists()


def finished(*task_ids: int) -> Callable[[], bool]:
    return lambda: CompletedTask.objects.filter(task_id__in=task_ids).count() == len(task_ids)


def children_registered(count: int) -> Callable[[], bool]:
    """True once ``count`` children run (the supervisor's signal handlers are then in place)."""
    return lambda: Worker.objects.count() >= count


# -- hard time limits --------------------------------------------------------------------------


def test_timeout__the_overrunning_child_is_killed_and_the_task_retried_then_given_up(
    spawn: Spawn,
) -> None:
    slow = tasks.overruns("slow")  # timeout=1, max_attempts=2
    others = [tasks.record(f"other-{index}").pk for index in range(8)]
    proc = spawn("--processes", "2")

    wait_while_running(proc, finished(slow.pk, *others), "the tasks to finish", timeout=90)
    _, err = stop(proc)

    completed = CompletedTask.objects.get(task_id=slow.pk)
    assert completed.status == CompletedTask.Status.FAILED
    assert completed.attempts == 2
    assert "Timed out after 1 s" in completed.last_error
    assert err.count("event=task_timed_out") == 2, err
    pids = list(
        TaskRun.objects.filter(key="slow:started")
        .order_by("id")
        .values_list("worker_pid", flat=True)
    )
    assert len(pids) == 2
    assert pids[0] != pids[1]  # the killed process ran nothing more
    # The other child went on with its own tasks, each once and untouched by the kills.
    for index, pk in enumerate(others):
        assert runs(f"other-{index}") == 1
        other = CompletedTask.objects.get(task_id=pk)
        assert other.status == CompletedTask.Status.SUCCEEDED
        assert other.attempts == 1
    assert not Task.objects.exists()
    assert not Worker.objects.exists()


def test_max_run_time__is_the_default_limit_and_other_tasks_run_meanwhile(spawn: Spawn) -> None:
    # MAX_RUN_TIME is the legacy setting's name; tests/settings.py reads it from the environment.
    proc = spawn("--processes", "2", env={"MAX_RUN_TIME": "4"})
    wait_while_running(proc, children_registered(2), "both children to start")
    stuck = tasks.blocks("stuck")  # no timeout of its own, max_attempts=1
    wait_while_running(proc, started("stuck"), "the blocking task to start")

    others = [tasks.record(f"meanwhile-{index}").pk for index in range(10)]
    wait_while_running(proc, finished(stuck.pk, *others), "the tasks to finish")
    _, err = stop(proc)

    completed = CompletedTask.objects.get(task_id=stuck.pk)
    assert completed.status == CompletedTask.Status.FAILED
    assert completed.attempts == 1
    assert "Timed out after 4 s" in completed.last_error
    assert completed.started_at is not None
    assert (completed.finished_at - completed.started_at).total_seconds() >= 4
    assert "event=task_timed_out" in err
    # All of them ran in the other child while the blocked one still held its task.
    meanwhile = CompletedTask.objects.filter(task_id__in=others)
    assert meanwhile.succeeded().count() == len(others)
    assert all(other.finished_at < completed.finished_at for other in meanwhile)
    assert not Task.objects.exists()
    assert not Worker.objects.exists()


# -- children that die -------------------------------------------------------------------------


def test_child_killed_mid_task__the_attempt_fails_and_a_new_child_retries_it(spawn: Spawn) -> None:
    task = tasks.kills_its_process("doomed")  # SIGKILLs its own process on the first attempt
    proc = spawn("--processes", "1")

    wait_while_running(proc, finished(task.pk), "the task to be retried and finish")
    out, err = stop(proc)

    completed = CompletedTask.objects.get(task_id=task.pk)
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert completed.attempts == 2
    assert "exited unexpectedly" in completed.last_error
    assert "-9" in completed.last_error  # the signal that ended it
    first, second = TaskRun.objects.filter(key="doomed:started").order_by("id")
    assert first.worker_pid != second.worker_pid
    assert TaskRun.objects.get(key="doomed:done").worker_pid == second.worker_pid
    assert out.count("event=child_started") == 2, out  # the only child, then its replacement
    assert "event=child_exited" in err
    assert not Task.objects.exists()
    assert not Worker.objects.exists()


# -- shutdown ----------------------------------------------------------------------------------


def test_sigterm__children_finish_their_tasks_and_the_supervisor_exits_0(spawn: Spawn) -> None:
    first = tasks.started_then_sleeps("first", 3.0)
    second = tasks.started_then_sleeps("second", 3.0)
    proc = spawn("--processes", "2", "--shutdown-grace", "30")
    wait_while_running(
        proc, lambda: started("first")() and started("second")(), "both tasks to start"
    )
    waiting = tasks.record("waiting")  # both children are busy: nobody claims it before the stop

    stop(proc)

    for task, key in [(first, "first"), (second, "second")]:
        completed = CompletedTask.objects.get(task_id=task.pk)
        assert completed.status == CompletedTask.Status.SUCCEEDED
        assert completed.attempts == 1
        assert runs(f"{key}:done") == 1
    left = Task.objects.get()
    assert left.pk == waiting.pk
    assert left.locked_by is None
    assert left.attempts == 0
    assert runs("waiting") == 0
    assert not Worker.objects.exists()


def test_second_sigterm__the_supervisor_exits_1_at_once(spawn: Spawn) -> None:
    task = tasks.started_then_sleeps("forced", 60.0)
    proc = spawn("--processes", "1", "--shutdown-grace", "60")
    wait_while_running(proc, started("forced"), "the task to start")

    proc.send_signal(signal.SIGTERM)
    # The first signal only stops claiming: the task has 60 s of grace left. (This wait also
    # keeps the two signals apart: two that arrive before Python runs the handler count as one.)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.communicate(timeout=1.0)

    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    exited(proc, code=1, timeout=15)

    assert time.monotonic() - began < 15
    assert runs("forced:done") == 0
    assert not CompletedTask.objects.exists()
    # Not left held by a process that is gone: the interrupted attempt counts, and it runs again.
    interrupted = Task.objects.get(pk=task.pk)
    assert interrupted.locked_by is None
    assert interrupted.attempts == 1


# -- options -----------------------------------------------------------------------------------


def _unreachable_database_url(tmp_path: Path) -> str:
    """A URL of this test run's database vendor that no connection can be opened to."""
    if connection.vendor == "sqlite":
        directory = tmp_path / "a-directory-not-a-database"
        directory.mkdir()
        return dburl.to_url({"ENGINE": dburl.SQLITE_ENGINE, "NAME": str(directory)})
    return dburl.to_url({**connection.settings_dict, "HOST": "127.0.0.1", "PORT": "1"})


def test_processes_with_concurrency__is_refused_before_any_database_work(tmp_path: Path) -> None:
    env = worker_env(DATABASE_URL=_unreachable_database_url(tmp_path))
    # The control: any command that does touch the database fails with that URL.
    assert run_command("showmigrations", "background_tasks", env=env).returncode != 0

    result = run_command("process_tasks", "--processes", "2", "--concurrency", "2", env=env)

    assert result.returncode == 1, result.stderr
    assert "CommandError: --processes and --concurrency cannot be combined" in result.stderr


def test_processes_with_batch__is_refused_before_any_database_work(tmp_path: Path) -> None:
    env = worker_env(DATABASE_URL=_unreachable_database_url(tmp_path))

    result = run_command("process_tasks", "--processes", "2", "--batch", "5", env=env)

    assert result.returncode == 1, result.stderr
    assert "CommandError: --processes and --batch cannot be combined" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("count", [0, 6])
def test_burst__the_supervisor_exits_0_once_the_queue_is_empty(spawn: Spawn, count: int) -> None:
    for index in range(count):
        tasks.record(f"burst-{index}")

    _, err = exited(spawn("--processes", "2", "--burst"), timeout=90)

    for index in range(count):
        assert runs(f"burst-{index}") == 1
    assert CompletedTask.objects.succeeded().count() == count
    assert not Task.objects.exists()
    assert not Worker.objects.exists()
    assert "event=child_exited" not in err, err
