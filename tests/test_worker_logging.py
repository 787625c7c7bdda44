"""The worker speaks by default: a start-up line, one line per finished task, what a stop waits for.

Real ``process_tasks`` processes in a generated project whose settings have no ``LOGGING``, on
a freshly migrated database (a SQLite file, or a PostgreSQL schema of its own).
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

import background_tasks
from tests.helpers import wait_for
from tests.project import TASKS_MODULE, Project, empty_database, output

SCHEMA = "bt_worker_logging"
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")

TASKS = (
    TASKS_MODULE
    + '''

import time
from pathlib import Path


@background
def hold(started: str, release: str) -> None:
    """Run until the file ``release`` exists (a minute at most)."""
    Path(started).touch()
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
'''
)


def make_project(root: Path, database: dict[str, Any], settings: str = "") -> Project:
    project = Project(root / "site", database=database, settings=settings, tasks=TASKS)
    migrated = project.manage("migrate", "-v", "0")
    assert migrated.returncode == 0, output(migrated)
    return project


@pytest.fixture
def database(tmp_path: Path, django_db_setup: None, django_db_blocker: Any) -> Iterator[Any]:
    with django_db_blocker.unblock(), empty_database(tmp_path, SCHEMA) as settings:
        yield settings


@pytest.fixture
def project(tmp_path: Path, database: dict[str, Any]) -> Project:
    return make_project(tmp_path, database)


def enqueue_greetings(project: Project, *names: str) -> list[int]:
    code = "from shop.tasks import greet\n" + "".join(f"print(greet({n!r}).pk)\n" for n in names)
    result = project.python(code)
    assert result.returncode == 0, output(result)
    return [int(line) for line in result.stdout.split()]


def test_worker__without_logging_settings__logs_a_banner_and_one_line_per_task_to_stderr(
    project: Project,
) -> None:
    ids = enqueue_greetings(project, "ada", "grace")

    result = project.manage("process_tasks", "--burst")

    assert result.returncode == 0, output(result)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and all(TIMESTAMPED.match(line) for line in lines), output(result)
    banner = next(line for line in lines if "event=worker_started" in line)
    assert f"version={background_tasks.__version__}" in banner
    assert f"database={connection.vendor}:" in banner
    for part in ("queues=*", "concurrency=1", "poll_interval=5s", "wakeup=poll"):
        assert part in banner
    finished = [line for line in lines if "event=task_succeeded" in line]
    assert len(finished) == 2, output(result)
    for task_id, line in zip(ids, finished, strict=True):
        assert (
            f" INFO event=task_succeeded task=shop.tasks.greet task_id={task_id} attempt=1 " in line
        )
        assert re.search(r"duration=\d+\.\d{3}s", line)
    assert not any("event=task_started" in line for line in lines)


def test_worker__verbosity_0__writes_nothing_for_tasks_that_succeed(project: Project) -> None:
    enqueue_greetings(project, "ada")

    result = project.manage("process_tasks", "--burst", "--verbosity", "0")

    assert result.returncode == 0, output(result)
    assert result.stderr == "" and result.stdout == ""


def test_worker__verbosity_2__adds_debug_lines(project: Project) -> None:
    (task_id,) = enqueue_greetings(project, "ada")

    result = project.manage("process_tasks", "--burst", "--verbosity", "2")

    assert result.returncode == 0, output(result)
    assert f"DEBUG event=task_started task=shop.tasks.greet task_id={task_id} attempt=1" in (
        result.stderr
    )


def test_worker__logging_setting_that_routes_the_logger__wins(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    log_file = tmp_path / "tasks.log"
    project = make_project(
        tmp_path,
        database,
        settings=f"""
        LOGGING = {{
            "version": 1,
            "handlers": {{
                "file": {{"class": "logging.FileHandler", "filename": {str(log_file)!r}}},
            }},
            "root": {{"handlers": ["file"], "level": "INFO"}},
        }}
        """,
    )
    enqueue_greetings(project, "ada")

    result = project.manage("process_tasks", "--burst")

    assert result.returncode == 0, output(result)
    assert "event=" not in result.stderr
    assert "event=task_succeeded task=shop.tasks.greet" in log_file.read_text()


def test_worker__log_std__keeps_writing_info_to_stdout(project: Project) -> None:
    enqueue_greetings(project, "ada")

    result = project.manage("process_tasks", "--burst", "--log-std")

    assert result.returncode == 0, output(result)
    assert "event=task_succeeded task=shop.tasks.greet" in result.stdout
    assert "event=" not in result.stderr


def test_processes__the_supervisor_and_its_children_log_by_default(project: Project) -> None:
    enqueue_greetings(project, "ada")

    result = project.manage("process_tasks", "--burst", "--processes", "1")

    assert result.returncode == 0, output(result)
    assert "event=supervisor_started" in result.stderr and "processes=1" in result.stderr
    assert "event=task_succeeded task=shop.tasks.greet" in result.stderr


def test_first_ctrl_c__says_what_the_worker_waits_for_and_how_to_stop_now(
    project: Project, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    enqueued = project.python(
        f"from shop.tasks import hold\nhold({str(started)!r}, {str(release)!r})"
    )
    assert enqueued.returncode == 0, output(enqueued)
    worker = project.start("process_tasks", "--shutdown-grace", "30")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(worker.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_for(started.exists, message="the task to start")

        worker.send_signal(signal.SIGINT)
        wait_for(
            lambda: any("event=worker_stopping" in line for line in lines),
            message="the stopping line",
        )
        release.touch()
        code = worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        reader.join(timeout=10)
        if worker.stdout is not None:
            worker.stdout.close()

    text = "".join(lines)
    assert code == 0, text
    # Without --burst, PostgreSQL workers LISTEN for new tasks; the others poll.
    wakeup = "listen" if connection.vendor == "postgresql" else "poll"
    assert f"wakeup={wakeup}" in text
    assert (
        "stopping: waiting up to 30 s for 1 running task(s); press Ctrl-C again to stop now" in text
    )
    assert "event=task_succeeded task=shop.tasks.hold" in text
    assert "event=worker_stopped" in text
