"""Before ``migrate``, the worker, the operator command and an enqueue say so in one line.

Real processes in a generated project on an empty database: a SQLite file, or on PostgreSQL a
schema of its own in the test database.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from background_tasks.exit_codes import EXIT_NOT_MIGRATED
from tests.project import Project, empty_database, output

SCHEMA = "bt_not_migrated"
MIGRATE_HINT = "run `python manage.py migrate` first"


@pytest.fixture
def project(tmp_path: Path, django_db_setup: None, django_db_blocker: Any) -> Iterator[Project]:
    with django_db_blocker.unblock(), empty_database(tmp_path, SCHEMA) as database:
        yield Project(tmp_path / "site", database=database)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The only line on stderr of a command that failed."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, output(result)
    assert len(lines) == 1, output(result)
    return lines[0]


def test_process_tasks__before_migrate__exits_at_once_saying_to_run_migrate(
    project: Project,
) -> None:
    result = project.manage("process_tasks", "--burst", timeout=60)

    assert result.returncode == EXIT_NOT_MIGRATED, output(result)
    line = _one_line_error(result)
    assert MIGRATE_HINT in line
    assert "background_tasks.0001_initial" in line


def test_process_tasks_in_process_mode__before_migrate__exits_saying_to_run_migrate(
    project: Project,
) -> None:
    result = project.manage("process_tasks", "--processes", "2", timeout=60)

    assert result.returncode == EXIT_NOT_MIGRATED, output(result)
    assert MIGRATE_HINT in _one_line_error(result)


def test_operator_command__before_migrate__exits_saying_to_run_migrate(project: Project) -> None:
    result = project.manage("background_tasks", "list", timeout=60)

    assert MIGRATE_HINT in _one_line_error(result)


def test_enqueue__before_migrate__raises_an_improperly_configured_error_naming_migrate(
    project: Project,
) -> None:
    result = project.python(
        """
        from django.core.exceptions import ImproperlyConfigured
        from shop.tasks import greet
        try:
            greet("ada")
        except ImproperlyConfigured as exc:
            print("raised:", exc)
        """
    )

    assert result.returncode == 0, output(result)
    assert "raised: background_tasks is not set up in database 'default'" in result.stdout
    assert MIGRATE_HINT in result.stdout


def test_after_migrate__the_worker_and_an_enqueue_run(project: Project) -> None:
    migrated = project.manage("migrate", "-v", "0")
    assert migrated.returncode == 0, output(migrated)

    enqueued = project.python("from shop.tasks import greet\nprint(greet('ada').pk)")
    assert enqueued.returncode == 0, output(enqueued)
    worker = project.manage("process_tasks", "--burst", "-v", "0")
    assert worker.returncode == 0, output(worker)
    history = project.manage("background_tasks", "history", "--json")
    assert '"status": "succeeded"' in history.stdout, output(history)


def test_after_a_partial_migrate__the_unapplied_migration_is_named(project: Project) -> None:
    migrated = project.manage("migrate", "contenttypes", "-v", "0")
    assert migrated.returncode == 0, output(migrated)

    result = project.manage("process_tasks", "--burst")

    assert "unapplied migrations: background_tasks.0001_initial" in _one_line_error(result)
