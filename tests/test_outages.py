"""Database outages: the workers' connections are killed again and again while they drain a queue.

Two real ``process_tasks`` workers drain 300 tasks while the test kills every other connection
to the test database a few times (PostgreSQL: ``pg_terminate_backend``; MariaDB/MySQL:
``KILL``), each time after some more tasks completed. The workers must reconnect and go on:
every task succeeds (at least once: a task whose connection died mid-run runs again), nothing is
left in the queue, and both workers are still running at the end and stop cleanly. SQLite has no
server connections to kill, so the test is skipped there.

Logs go to files, not pipes: 300 tasks log more than a pipe buffer holds.

The first test pins down, in-process and on every database, the case those kills found: a claim
that commits but whose reply is lost with the connection.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction

from background_tasks import worker as worker_module
from background_tasks.claims import claim_tasks
from background_tasks.models import CompletedTask, Task, Worker
from tests.helpers import REPO_ROOT, manage_command, wait_for, worker_env
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 2
TASKS = 300
ROUNDS = 4
MYSQL_UNKNOWN_THREAD = 1094


def test_claim_reply_lost__the_worker_releases_the_rows_it_holds_unknowingly_and_runs_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = tasks.record("reply-lost")
    claims: list[list[Task]] = []

    def claim_then_lose_the_reply(*args: Any, **kwargs: Any) -> list[Task]:
        claimed = claim_tasks(*args, **kwargs)
        claims.append(claimed)
        if len(claims) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return claimed

    monkeypatch.setattr(worker_module, "claim_tasks", claim_then_lose_the_reply)

    assert worker_module.Worker(burst=True, sleep=0.01).run() == 0

    assert [claimed.pk for claimed in claims[0]] == [task.pk]  # held, but unknown to the worker
    completed = CompletedTask.objects.get(task_id=task.pk)
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert completed.attempts == 1  # the lost claim ran nothing, so it does not count
    assert TaskRun.objects.filter(key="reply-lost").count() == 1
    assert not Task.objects.exists()


def kill_other_connections() -> int:
    """Kill every connection to the test database but this one; return how many were killed."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return sum(1 for (terminated,) in cursor.fetchall() if terminated)
        cursor.execute(
            "SELECT id FROM information_schema.processlist "
            "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        )
        killed = 0
        for (thread_id,) in cursor.fetchall():
            try:
                cursor.execute(f"KILL {int(thread_id)}")
            except OperationalError as exc:
                if exc.args[0] != MYSQL_UNKNOWN_THREAD:  # it ended by itself meanwhile
                    raise
            else:
                killed += 1
        return killed


@pytest.fixture
def killable_connections() -> None:
    if connection.vendor not in ("postgresql", "mysql"):
        pytest.skip("only a database server has connections to kill")


def _start(log_dir: Path, index: int) -> subprocess.Popen[bytes]:
    with (
        (log_dir / f"worker-{index}.out").open("wb") as out,
        (log_dir / f"worker-{index}.err").open("wb") as err,
    ):
        # The child keeps its own copies of the descriptors; ours close with the block.
        return subprocess.Popen(
            manage_command("process_tasks", "--concurrency", "2", "--sleep", "0.1", "--log-std"),
            env=worker_env(),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=err,
        )


@pytest.mark.concurrency
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_connection_kills__workers_reconnect_and_every_task_completes(
    killable_connections: None, tmp_path: Path
) -> None:
    keys = [f"outage-{index:03d}" for index in range(TASKS)]
    with transaction.atomic():
        for key in keys:
            tasks.record_retried_at_once(key)  # retried at once when a kill makes it fail

    def logs(index: int) -> str:
        return (tmp_path / f"worker-{index}.err").read_text(errors="replace")

    def running() -> bool:
        for index, proc in enumerate(procs):
            assert proc.poll() is None, (
                f"worker {index} exited with {proc.returncode}:\n{logs(index)}"
            )
        return True

    def completed_at_least(count: int) -> Callable[[], bool]:
        return lambda: running() and CompletedTask.objects.count() >= count

    procs: list[subprocess.Popen[bytes]] = []
    killed: list[int] = []
    try:
        procs.extend(_start(tmp_path, index) for index in range(WORKERS))
        wait_for(lambda: running() and Worker.objects.count() == WORKERS, 60, message="the workers")
        for round_ in range(1, ROUNDS + 1):
            target = round_ * TASKS // (ROUNDS + 1)
            wait_for(completed_at_least(target), timeout=60, message=f"{target} tasks to complete")
            killed.append(kill_other_connections())
        wait_for(
            lambda: running() and not Task.objects.exists(),
            timeout=120,
            message="every task to complete",
        )
        running()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for index, proc in enumerate(procs):
            code = proc.wait(timeout=30)
            assert code == 0, f"worker {index} exited with {code}:\n{logs(index)}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    assert all(count > 0 for count in killed), killed
    for index in range(WORKERS):
        assert "Traceback" not in logs(index), logs(index)
        # They did see the outages, and went on.
        assert "event=database_unavailable" in logs(index) or "event=task_failed" in logs(index)
    runs = Counter(TaskRun.objects.values_list("key", flat=True))
    assert set(runs) == set(keys), "lost tasks: " + ", ".join(sorted(set(keys) - set(runs)))
    completed = CompletedTask.objects.filter(task_name=tasks.record_retried_at_once.name)
    assert completed.count() == TASKS
    assert completed.succeeded().count() == TASKS
    assert not Task.objects.exists()
    assert not Worker.objects.exists()
