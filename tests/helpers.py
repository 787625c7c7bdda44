"""Shared test helpers: waiting on conditions, real worker subprocesses, server limits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests import dburl

REPO_ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    condition: Callable[[], object],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "",
) -> None:
    """Poll ``condition`` until it is true; fail the test once ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(interval)


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess using this test run's database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = dburl.to_url(connection.settings_dict)
    # tests.settings, or the variant pytest runs with (--ds); under override_settings()
    # settings.SETTINGS_MODULE is None, so pytest-django's environment variable comes first.
    env["DJANGO_SETTINGS_MODULE"] = (
        os.environ.get("DJANGO_SETTINGS_MODULE") or settings.SETTINGS_MODULE or "tests.settings"
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def manage_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "django", *args]


def start_worker(
    args: Sequence[str] = (), env: dict[str, str] | None = None, **popen: object
) -> subprocess.Popen[str]:
    """Start ``process_tasks`` as a real subprocess against the test database."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        manage_command("process_tasks", *args),
        env=env or worker_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def run_command(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a management command in a subprocess and wait for it."""
    return subprocess.run(
        manage_command(*args),
        env=env or worker_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def max_allowed_packet() -> int:
    """The server's ``max_allowed_packet``, for tests that fill it; skip elsewhere or if huge."""
    if connection.vendor != "mysql":
        pytest.skip("only MySQL/MariaDB limit the size of a statement")
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@max_allowed_packet")
        packet = int(cursor.fetchone()[0])
    if packet > 32 * 1024 * 1024:
        pytest.skip("a larger max_allowed_packet than this test should fill")
    return packet
