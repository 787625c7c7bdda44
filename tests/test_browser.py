"""A real browser against the example project: log in, read the dashboard, act on a task.

Starts ``runserver`` for the example project (its own SQLite file in a temporary directory) on
a free port and drives headless Chromium through Selenium and chromedriver. Screenshots go to
a temporary directory, or to ``BACKGROUND_TASKS_SCREENSHOTS`` when set (``make screenshots``
refreshes the ones docs/admin.md shows).

Skipped when Chromium, chromedriver or Selenium is missing (``.ci/run`` installs them), and in
the PostgreSQL and MariaDB legs: the example project always runs on SQLite, so one run is enough.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent
MANAGE_PY = REPO_ROOT / "example_project" / "manage.py"
USERNAME = "admin"
PASSWORD = "browser-test-password"
WINDOW = (1280, 900)

if os.environ.get("DATABASE_URL", "sqlite").strip().split(":")[0] not in ("", "sqlite"):
    pytest.skip(
        "the example project runs on its own SQLite file whatever DATABASE_URL says: "
        "the browser test runs once, without DATABASE_URL",
        allow_module_level=True,
    )

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "no headless browser: install Debian's chromium and chromium-driver "
        "(apt-get install chromium chromium-driver; .ci/run does)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is missing: pip install -e '.[test]'"
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


def manage(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, str(MANAGE_PY), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Migrate a fresh example database, add an admin and sample data, serve it; yield its URL."""
    tmp = tmp_path_factory.mktemp("example")
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        EXAMPLE_DB_PATH=str(tmp / "example.sqlite3"),
        PYTHONUNBUFFERED="1",
    )
    manage("migrate", "--noinput", env=env)
    # One process for both: every Django start-up costs a second or two.
    manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "from django.core.management import call_command; "
        f"User.objects.create_superuser({USERNAME!r}, password={PASSWORD!r}); "
        "call_command('sample_history', rows=600)",
        env=env,
    )
    port = free_port()
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(MANAGE_PY), "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # A real worker, so that the dashboard lists one (it serves a queue with nothing due yet).
    worker = subprocess.Popen(
        [sys.executable, str(MANAGE_PY), "process_tasks", "--queue", "reports"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or answers(url + "/admin/login/"), timeout=60)
        assert proc.poll() is None, (tmp / "server.log").read_text()
        yield url
    finally:
        for process in (proc, worker):
            process.terminate()
            process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("BACKGROUND_TASKS_SCREENSHOTS", "").strip()
    target = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def screenshot(driver: Any, path: Path) -> None:
    """Save the whole page (not just the window) as a PNG."""
    measure = (
        "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight,"
        " document.getElementById('container').scrollHeight)"
    )
    for _ in range(2):  # the layout may grow once the window does
        height = min(max(int(driver.execute_script(measure)), 400), 2400)
        driver.set_window_size(WINDOW[0], height + 20)
    driver.save_screenshot(str(path))
    driver.set_window_size(*WINDOW)
    assert path.stat().st_size > 10_000, f"{path} looks empty"


def test_admin_in_a_browser__dashboard_task_list_task_page_and_cancel_action(
    server: str, browser: Any, shots: Path
) -> None:
    browser.get(f"{server}/admin/login/?next=/admin/background_tasks/")
    browser.find_element(By.NAME, "username").send_keys(USERNAME)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    # The app index links to the dashboard.
    browser.find_element(By.LINK_TEXT, "Dashboard").click()
    # Fold the admin's navigation sidebar away (remembered by the browser): more room for pages.
    browser.find_element(By.ID, "toggle-nav-sidebar").click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "Background tasks dashboard"
    queues = browser.find_element(By.ID, "bt-queues").text
    assert "default" in queues and "reports" in queues
    charts = browser.find_elements(By.CSS_SELECTOR, "#bt-throughput svg")
    assert len(charts) == 2
    assert browser.find_elements(By.CSS_SELECTOR, "#bt-throughput rect.ok")
    failures = browser.find_element(By.ID, "bt-failures").text
    assert "Error" in failures and ("TimeoutError" in failures or "ValueError" in failures)
    wait_for(
        lambda: "alive" in browser.find_element(By.ID, "bt-workers").text or browser.refresh(),
        timeout=30,
        interval=0.5,
        message="the worker to register",
    )
    assert "shop.tasks.daily_sales_report" in browser.find_element(By.ID, "bt-schedules").text
    screenshot(browser, shots / "dashboard.png")

    # The task list, then one task's page.
    browser.get(f"{server}/admin/background_tasks/task/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == 5
    browser.find_element(By.PARTIAL_LINK_TEXT, "Sales report in 3 h").click()
    assert "shop.tasks.build_sales_report" in browser.find_element(By.ID, "content").text
    screenshot(browser, shots / "task-detail.png")

    # Cancel it from the list with the admin action.
    browser.get(f"{server}/admin/background_tasks/task/")
    row = browser.find_element(By.XPATH, "//tr[.//a[contains(., 'Sales report in 3 h')]]")
    row.find_element(By.NAME, "_selected_action").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("cancel")
    browser.find_element(By.NAME, "index").click()
    messages = browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert "1 task cancelled." in messages
    assert "Sales report in 3 h" not in browser.find_element(By.ID, "result_list").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")) == 4
    screenshot(browser, shots / "task-list.png")

    # The cancelled task is in the history now.
    browser.get(f"{server}/admin/background_tasks/completedtask/?status=cancelled")
    assert "Sales report in 3 h" in browser.find_element(By.ID, "result_list").text
