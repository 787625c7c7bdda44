"""The example project works as its README says: ``check`` is clean and ``demo`` succeeds.

Each command runs in a subprocess with the example project's own settings, on a SQLite file
in a temporary directory (``EXAMPLE_DB_PATH``), never on the test database.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MANAGE_PY = REPO_ROOT / "example_project" / "manage.py"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "example.sqlite3"


def manage(*args: str, db_path: Path, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        EXAMPLE_DB_PATH=str(db_path),
        PYTHONUNBUFFERED="1",
        **env_overrides,
    )
    return subprocess.run(
        [sys.executable, str(MANAGE_PY), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_check__is_clean_and_ignores_database_url(db_path: Path) -> None:
    # A DATABASE_URL meant for the test suite must not send the example elsewhere.
    result = manage(
        "check",
        "--fail-level",
        "WARNING",
        db_path=db_path,
        DATABASE_URL="postgres://nobody@127.0.0.1:1/nowhere",
    )

    assert_ok(result)
    assert "System check identified no issues" in result.stdout


def test_demo__runs_three_tasks_to_success_with_a_retry_and_can_run_again(db_path: Path) -> None:
    assert_ok(manage("migrate", "--noinput", db_path=db_path))

    result = manage("demo", db_path=db_path)

    assert_ok(result)
    out = result.stdout
    assert "All 3 tasks succeeded" in out
    assert out.count("status:     succeeded after") == 3
    # The flaky task failed its first attempt and succeeded on the retry.
    assert "status:     succeeded after 2 attempt(s)" in out
    assert re.search(r"attempt 1: .* failed: supplier API timed out", out)
    assert "error of the failed attempt: shop.supplier.SupplierUnavailable" in out
    # The worker's log lines are shown, including the failed attempt.
    assert "event=task_failed task=shop.tasks.reserve_stock" in out
    assert "will_retry=True" in out
    # The scheduled task waited for its time.
    assert "shop.tasks.build_sales_report" in out
    assert "scheduled, due" in out

    # A second run replaces the first one's rows instead of piling up or tripping over them.
    again = manage("demo", db_path=db_path)

    assert_ok(again)
    assert "All 3 tasks succeeded" in again.stdout
    with sqlite3.connect(db_path) as db:
        demo_rows = db.execute(
            "SELECT status, COUNT(*) FROM background_tasks_completedtask "
            "WHERE verbose_name LIKE '[demo] %' GROUP BY status"
        ).fetchall()
        live_rows = db.execute("SELECT COUNT(*) FROM background_tasks_task").fetchone()[0]
    assert demo_rows == [("succeeded", 3)]
    assert live_rows == 0


def test_demo__the_next_hints_run_as_printed(db_path: Path) -> None:
    assert_ok(manage("migrate", "--noinput", db_path=db_path))
    out = manage("demo", db_path=db_path).stdout

    hints = re.findall(r"^  (.+ (?:createsuperuser|runserver))$", out, re.MULTILINE)
    hints += re.findall(r"and run (.+ process_tasks)$", out, re.MULTILINE)

    assert len(hints) == 3, out
    for hint in hints:
        # --help: the command line as printed reaches the command, without running it.
        ran = subprocess.run(
            [*shlex.split(hint), "--help"],
            cwd=REPO_ROOT,
            env={**os.environ, "EXAMPLE_DB_PATH": str(db_path)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert_ok(ran)
        assert "usage: manage.py" in ran.stdout


def test_start_housekeeping__starts_one_repeating_series_however_often_it_runs(
    db_path: Path,
) -> None:
    assert_ok(manage("migrate", "--noinput", db_path=db_path))

    first = manage("start_housekeeping", db_path=db_path)
    second = manage("start_housekeeping", db_path=db_path)
    listing = manage("background_tasks", "list", "--json", db_path=db_path)

    assert_ok(first)
    assert_ok(second)
    assert_ok(listing)
    assert first.stdout.split(",")[0] == second.stdout.split(",")[0]  # the same task id
    rows = json.loads(listing.stdout)
    assert [row["task_name"] for row in rows] == ["shop.tasks.expire_unpaid_orders"]


IMPORT_SCRIPT = """
import json
from django.contrib.auth.models import User
from django.test import Client
from background_tasks.testing import run_tasks

client = Client(SERVER_NAME="localhost")  # in ALLOWED_HOSTS
client.force_login(User.objects.create_user("importer"))
posted = client.post("/import/", {"csv": "email,product,quantity,amount\\n"
                                          "a@example.com,Pen,2,3.50\\nbroken,row\\n"})
task_id = int(posted["Location"].rstrip("/").rsplit("/", 1)[1])
url = f"/import/{task_id}/progress.json"
before = client.get(url).json()
page = client.get(f"/import/{task_id}/").content.decode()
ran = run_tasks()
after = client.get(url).json()
stranger = Client(SERVER_NAME="localhost")
stranger.force_login(User.objects.create_user("stranger"))
print(json.dumps({"before": before, "after": after, "ran": ran, "polls": url in page,
                  "stranger": stranger.get(url).status_code}))
"""


def test_csv_import__page_enqueues_the_import_and_its_json_view_reports_progress(
    db_path: Path,
) -> None:
    assert_ok(manage("migrate", "--noinput", db_path=db_path))

    result = manage("shell", "-c", IMPORT_SCRIPT, db_path=db_path, SHOP_IMPORT_ROW_DELAY="0")

    assert_ok(result)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["before"]["status"] == "waiting" and seen["before"]["done"] is None
    assert seen["polls"] is True and seen["ran"] == 1
    after = seen["after"]
    assert (after["status"], after["finished"], after["done"], after["total"]) == (
        "succeeded",
        True,
        2,
        2,
    )
    assert after["message"] == "row 2 of 2: 1 skipped"
    # Another user cannot poll someone else's import.
    assert seen["stranger"] == 404
