"""Workers claiming side by side: every task runs exactly once, and none waits for another.

The burst test runs real ``process_tasks`` subprocesses against the test database, so it needs
committed rows (``transaction=True``) and a database the subprocesses can open (SQLite is a
file, see ``tests/settings.py``). Their logs go to files, not pipes: a thousand tasks log more
than a pipe buffer holds, and a worker blocked on a full pipe would stall the run.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from background_tasks.claims import claim_tasks
from background_tasks.models import CompletedTask, Task, Worker
from tests.helpers import REPO_ROOT, manage_command, worker_env
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

WORKERS = 4
TASKS = 1_000
DEADLINE = 300.0

#: Logged once by every thread-mode worker because the test app has a task with a timeout.
EXPECTED_WARNINGS = ("event=time_limits_not_enforced",)


def _start_logged_worker(args: list[str], log_dir: Path, index: int) -> subprocess.Popen[bytes]:
    """Start ``process_tasks`` with its stdout and stderr in files under ``log_dir``."""
    with (
        (log_dir / f"worker-{index}.out").open("wb") as out,
        (log_dir / f"worker-{index}.err").open("wb") as err,
    ):
        # The child keeps its own copies of the descriptors; ours close with the block.
        return subprocess.Popen(
            manage_command("process_tasks", *args),
            env=worker_env(),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=err,
        )


def _read(log_dir: Path, index: int, stream: str) -> str:
    return (log_dir / f"worker-{index}.{stream}").read_text(errors="replace")


def _unexpected_stderr_lines(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.strip() and not any(expected in line for expected in EXPECTED_WARNINGS)
    ]


def test_burst_workers__run_each_of_a_thousand_tasks_exactly_once(tmp_path: Path) -> None:
    keys = [f"key-{i:04d}" for i in range(TASKS)]
    with transaction.atomic():
        for key in keys:
            tasks.record(key)
    assert Task.objects.count() == TASKS

    args = ["--burst", "--sleep", "0.1", "--log-std"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(WORKERS):
            procs.append(_start_logged_worker(args, tmp_path, index))
        deadline = time.monotonic() + DEADLINE
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stderr = "\n".join(
                    f"--- worker {i} (exit {p.poll()}) ---\n{_read(tmp_path, i, 'err')}"
                    for i, p in enumerate(procs)
                )
                pytest.fail(
                    f"workers still running after {DEADLINE:g}s; "
                    f"{Task.objects.count()} tasks left.\n{stderr}"
                )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    for index, proc in enumerate(procs):
        stderr = _read(tmp_path, index, "err")
        assert proc.returncode == 0, f"worker {index} exited with {proc.returncode}:\n{stderr}"
        assert "Traceback" not in stderr, stderr
        # Database errors (e.g. "database is locked") are retried and logged, not raised: any
        # warning or error line means the workers got in each other's way.
        assert _unexpected_stderr_lines(stderr) == [], f"worker {index}:\n{stderr}"

    runs = Counter(TaskRun.objects.values_list("key", flat=True))
    assert set(runs) == set(keys)
    assert [key for key, count in runs.items() if count != 1] == []
    assert not Task.objects.exists()
    assert CompletedTask.objects.count() == TASKS
    assert CompletedTask.objects.succeeded().filter(task_name=tasks.record.name).count() == TASKS
    assert not Worker.objects.exists()

    succeeded_lines = sum(
        _read(tmp_path, index, "out").count("event=task_succeeded") for index in range(WORKERS)
    )
    assert succeeded_lines == TASKS

    pids = set(TaskRun.objects.values_list("worker_pid", flat=True))
    assert pids <= {proc.pid for proc in procs}
    assert len(pids) >= 2, "one worker ran every task: the others never got a claim in"


def test_claim__takes_the_next_row_while_another_claim_is_still_open() -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has one writer: claims queue on the write lock, they never overlap")
    first, second = tasks.record("first"), tasks.record("second")
    holding, done = threading.Event(), threading.Event()
    held: list[Task] = []
    errors: list[BaseException] = []

    def other_worker() -> None:
        """Claim one task and keep the claim's transaction open until told to finish."""
        try:
            with transaction.atomic():
                held.extend(claim_tasks("other-worker", [], 1))
                holding.set()
                done.wait(30)
        except BaseException as exc:
            errors.append(exc)
        finally:
            holding.set()
            connections.close_all()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert holding.wait(30)
        mine = claim_tasks("this-worker", [], 1)
    finally:
        done.set()
        thread.join(30)

    assert errors == []
    assert [task.pk for task in held] == [first.pk]
    assert [task.pk for task in mine] == [second.pk]
