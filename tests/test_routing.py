"""The queue tables in a database of their own, chosen by a router (tests/settings_routed.py).

Each test runs a fresh Django process on two SQLite files, since the routers and databases of
the suite's own settings cannot change under pytest-django.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT, manage_command

# Runs in the routed process: migrate both databases, enqueue, run, print what happened.
ENQUEUE_AND_RUN = """
import django
django.setup()
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from background_tasks.exceptions import InvalidTaskError
from background_tasks.models import CompletedTask, Task
from background_tasks.testing import run_tasks
from tests.testapp import tasks

for alias in ("default", "queue"):
    call_command("migrate", database=alias, verbosity=0)
user = User.objects.create(username="ada")
plain = tasks.send_newsletter(user.pk)
print("queued in queue db:", Task.objects.using("queue").filter(pk=plain.pk).exists())
try:
    tasks.send_newsletter(user.pk, creator=user)
except InvalidTaskError as exc:
    print("creator elsewhere:", exc)
beside = ContentType.objects.db_manager("queue").get_for_model(User)
with_creator = tasks.send_newsletter(2, creator=beside)
print("creator beside:", Task.objects.get(pk=with_creator.pk).creator == beside)
print("ran:", run_tasks())
print("results:", sorted(CompletedTask.objects.values_list("result", flat=True)))
"""


def routed_env(db_dir: Path, router: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings_routed"
    env["ROUTED_DB_DIR"] = str(db_dir)
    env["ROUTER"] = router
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_routed_tables__enqueue_and_run_with_contenttypes_beside_them(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ENQUEUE_AND_RUN],
        env=routed_env(tmp_path, "QueueRouter"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "queued in queue db: True" in lines
    assert "creator beside: True" in lines
    assert "ran: 2" in lines
    assert "results: ['sent weekly to 1', 'sent weekly to 2']" in lines
    # A creator from another database is refused at the call, saying what to do.
    refused = next(line for line in lines if line.startswith("creator elsewhere:"))
    assert "is in database 'default', but tasks are written to 'queue'" in refused
    assert "docs/installation.md" in refused


def test_routed_tables__without_contenttypes_beside_them_the_check_says_what_to_fix(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        manage_command("check"),
        env=routed_env(tmp_path, "QueueWithoutContentTypesRouter"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode != 0
    assert "background_tasks.E010" in done.stderr
    assert "allow_migrate() return True for app 'contenttypes' on 'queue'" in done.stderr
