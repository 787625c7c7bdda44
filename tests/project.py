"""A Django project generated in a temporary directory, as ``startproject`` would lay it out.

For tests of what a new user meets: ``manage.py check``, ``migrate`` and the worker run in
subprocesses with the project's own settings module (no test settings, no ``LOGGING``), so
system checks, start-up errors and the worker's default logging are the real ones.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_APPS = ("django.contrib.contenttypes", "background_tasks", "shop")

TASKS_MODULE = """\
from background_tasks import background


@background(queue="emails")
def greet(name: str) -> str:
    return f"hello {name}"
"""

MANAGE_PY = """\
import contextlib
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""


def sqlite_database(path: Path) -> dict[str, Any]:
    """The SQLite settings docs/installation.md recommends."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }


class Project:
    """A generated project: ``proj`` (settings, urls) and one app ``shop`` with a tasks module."""

    def __init__(
        self,
        root: Path,
        *,
        installed_apps: Sequence[str] = DEFAULT_APPS,
        database: dict[str, Any] | None = None,
        settings: str = "",
        tasks: str = TASKS_MODULE,
        urls: str = "urlpatterns = []\n",
    ) -> None:
        self.root = root
        database = database or sqlite_database(root / "db.sqlite3")
        (root / "proj").mkdir(parents=True)
        (root / "shop").mkdir()
        (root / "manage.py").write_text(MANAGE_PY)
        (root / "proj" / "__init__.py").write_text("")
        (root / "proj" / "urls.py").write_text(urls)
        (root / "shop" / "__init__.py").write_text("")
        (root / "shop" / "tasks.py").write_text(tasks)
        (root / "proj" / "settings.py").write_text(
            f"SECRET_KEY = 'generated-project-not-secret'\n"
            f"DEBUG = True\n"
            f"INSTALLED_APPS = {list(installed_apps)!r}\n"
            f"DATABASES = {{'default': {database!r}}}\n"
            f"ROOT_URLCONF = 'proj.urls'\n"
            f"USE_TZ = True\n"
            f"DEFAULT_AUTO_FIELD = 'django.db.models.BigAutoField'\n" + textwrap.dedent(settings)
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
        env["DJANGO_SETTINGS_MODULE"] = "proj.settings"
        env["PYTHONPATH"] = os.pathsep.join([str(self.root), str(REPO_ROOT)])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``python manage.py ARGS`` and wait for it."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start ``python manage.py ARGS`` without waiting (stderr merged into stdout)."""
        return subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def python(self, code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``code`` after ``django.setup()``, as a script of the project would."""
        script = "import django\ndjango.setup()\n" + textwrap.dedent(code)
        return subprocess.run(
            [sys.executable, "-c", script],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@contextlib.contextmanager
def empty_database(root: Path, name: str) -> Iterator[dict[str, Any]]:
    """Settings of an empty database for a generated project, on the vendor the tests run on.

    SQLite: a new file under ``root``. PostgreSQL: the test database with ``search_path`` set
    to a schema ``name`` of its own, created here and dropped afterwards. Other vendors skip
    the test. Needs the test database (the ``django_db_setup`` fixture) and database access.
    """
    from django.db import connection

    settings_dict = connection.settings_dict
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        yield sqlite_database(root / "fresh.sqlite3")
        return
    if not engine.endswith("postgresql"):
        pytest.skip("a generated project gets an empty database on SQLite and PostgreSQL only")
    keys = ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")
    database = {key: settings_dict[key] for key in keys if settings_dict.get(key)}
    database["OPTIONS"] = {"options": f"-c search_path={name}"}
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        cursor.execute(f"CREATE SCHEMA {name}")
    try:
        yield database
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
