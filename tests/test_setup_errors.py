"""A misconfigured project fails where it is first detectable, with a message naming the fix.

Each test generates a project (settings module, ``manage.py``, an app with a tasks module) and
runs ``manage.py check`` or a script in a subprocess: Django's real start-up, nothing patched.
The URLconf imports the tasks module, as a project whose views enqueue tasks does.
"""

from __future__ import annotations

from pathlib import Path

import django
import pytest

from tests.project import Project, output

IMPORTS_TASKS = (
    "import shop.tasks  # noqa: F401 - as views that enqueue would\n\nurlpatterns = []\n"
)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_check__a_complete_project_has_no_issues(tmp_path: Path) -> None:
    project = Project(tmp_path, urls=IMPORTS_TASKS)

    result = project.manage("check")

    assert result.returncode == 0, output(result)
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert result.stderr == ""


def test_check__without_contenttypes__names_the_missing_app(tmp_path: Path) -> None:
    project = Project(tmp_path, installed_apps=["background_tasks", "shop"])

    result = project.manage("check")

    assert result.returncode != 0
    assert last_line(result.stderr) == (
        "django.core.exceptions.ImproperlyConfigured: background_tasks needs "
        "'django.contrib.contenttypes' (a task records its creator through it): add "
        "'django.contrib.contenttypes' to INSTALLED_APPS in your settings."
    ), output(result)
    assert "RuntimeError" not in result.stderr


def test_check__background_used_without_the_app_installed__names_the_missing_app(
    tmp_path: Path,
) -> None:
    project = Project(
        tmp_path, installed_apps=["django.contrib.contenttypes", "shop"], urls=IMPORTS_TASKS
    )

    result = project.manage("check")

    assert result.returncode != 0
    assert last_line(result.stderr) == (
        "django.core.exceptions.ImproperlyConfigured: @background is used on shop.tasks.greet, "
        "but 'background_tasks' is not in INSTALLED_APPS: add 'background_tasks' to "
        "INSTALLED_APPS in your settings (then run `python manage.py migrate`)."
    ), output(result)


def test_models_imported_without_the_app_installed__name_the_missing_app(tmp_path: Path) -> None:
    project = Project(tmp_path, installed_apps=["django.contrib.contenttypes", "shop"])

    result = project.python("from background_tasks.models import Task")

    assert result.returncode != 0
    assert (
        "background_tasks.models was imported, but 'background_tasks' is not in INSTALLED_APPS"
        in (last_line(result.stderr))
    ), output(result)
    assert "explicit app_label" not in result.stderr


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks is new in Django 6.0")
def test_check__tasks_backend_without_the_app_installed__names_the_missing_app(
    tmp_path: Path,
) -> None:
    project = Project(
        tmp_path,
        installed_apps=["django.contrib.contenttypes", "shop"],
        settings="TASKS = {'default': {'BACKEND': 'background_tasks.backends.DatabaseBackend'}}\n",
        tasks="from django.tasks import task\n\n\n@task\ndef add(a: int, b: int) -> int:\n"
        "    return a + b\n",
        urls=IMPORTS_TASKS,
    )

    result = project.manage("check")

    assert result.returncode != 0
    assert last_line(result.stderr) == (
        "django.core.exceptions.ImproperlyConfigured: Task backend 'default' keeps its tasks in "
        "background_tasks' tables, but 'background_tasks' is not in INSTALLED_APPS: add "
        "'background_tasks' to INSTALLED_APPS in your settings (then run "
        "`python manage.py migrate`)."
    ), output(result)
