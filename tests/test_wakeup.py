"""PostgreSQL LISTEN/NOTIFY: an idle worker picks up a new task without waiting for its poll."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from django.db import connection, transaction
from django.test import override_settings

from background_tasks.models import Worker
from tests.helpers import start_worker, wait_for
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="NOTIFY is PostgreSQL's"),
]

POLL = 120.0  # far longer than any wait below: only a notification can explain a quick pickup


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def _idle_worker() -> subprocess.Popen[str]:
    proc = start_worker(["--sleep", str(POLL)])
    wait_for(lambda: Worker.objects.exists(), timeout=30, message="the worker to register")
    # The worker's first empty claim happened before it registered its listener thread's
    # LISTEN; wait until PostgreSQL shows that session listening.
    with connection.cursor() as cursor:

        def listening() -> bool:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN background_tasks%%'"
            )
            return bool(cursor.fetchone()[0])

        wait_for(listening, timeout=30, message="the worker to LISTEN")
    return proc


def test_notify__an_idle_worker_runs_a_new_task_long_before_its_next_poll() -> None:
    proc = _idle_worker()
    try:
        started = time.monotonic()
        tasks.record("woken")

        wait_for(
            lambda: TaskRun.objects.filter(key="woken").exists(),
            timeout=POLL / 4,
            message="the pickup",
        )
        assert time.monotonic() - started < POLL / 4
    finally:
        _stop(proc)


def test_notify__is_sent_on_commit_not_before() -> None:
    proc = _idle_worker()
    try:
        with transaction.atomic():
            tasks.record("after-commit")
            # Uncommitted: the worker cannot see the row, and PostgreSQL holds the notification.
            assert not TaskRun.objects.filter(key="after-commit").exists()
        wait_for(lambda: TaskRun.objects.filter(key="after-commit").exists(), timeout=POLL / 4)
    finally:
        _stop(proc)


@override_settings(BACKGROUND_TASKS_NOTIFY=False)
def test_notify__setting_off_sends_nothing() -> None:
    with connection.cursor() as cursor:
        cursor.execute("LISTEN background_tasks")
    tasks.record("quiet")

    notifications = list(connection.connection.notifies(timeout=0.2))  # type: ignore[union-attr]

    assert notifications == []
