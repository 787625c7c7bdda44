"""``background_tasks health``: the probe's checks, exit codes, one-line message and JSON."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from io import StringIO
from typing import Any
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone

from background_tasks import health
from background_tasks.models import Task, Worker
from tests.helpers import run_command

pytestmark = pytest.mark.django_db


def probe(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("background_tasks", "health", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def worker(name: str, queues: list[str], heartbeat_age: float, host: str = "h") -> Worker:
    return Worker.objects.create(
        id=name,
        host=host,
        pid=1,
        queues=queues,
        last_heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age),
    )


def ready_task(waited: float, **fields: Any) -> Task:
    fields.setdefault("task_name", "tests.testapp.tasks.record")
    return Task.objects.create(run_at=timezone.now() - timedelta(seconds=waited), **fields)


def test_health__passes_with_a_fresh_worker_and_no_waiting_task() -> None:
    worker("w1", [], heartbeat_age=1)

    code, out, err = probe()

    assert code == 0
    assert out.startswith("healthy: workers: 1 worker(s)") and err == ""


def test_health__fails_with_one_line_when_no_worker_has_a_fresh_heartbeat() -> None:
    worker("w1", [], heartbeat_age=120)

    code, out, err = probe("--max-heartbeat-age", "60")

    assert code == 1
    assert err.strip() == "unhealthy: workers: no worker has sent a heartbeat in the last 60s"
    assert out == ""


def test_health__fails_when_a_given_queue_has_no_worker_though_others_do() -> None:
    worker("w1", ["default"], heartbeat_age=1)
    worker("w2", [], heartbeat_age=600)  # would serve every queue, but it is stale

    code, _, err = probe("--queue", "default", "--queue", "emails")

    assert code == 1
    assert "serves queue 'emails'" in err and "'default'" not in err
    assert len(err.strip().splitlines()) == 1


def test_health__a_worker_without_queues_serves_every_queue() -> None:
    worker("w1", [], heartbeat_age=1)

    assert probe("--queue", "emails")[0] == 0


def test_health_this_host__counts_only_the_workers_of_this_host() -> None:
    worker("elsewhere", [], heartbeat_age=1, host="another-host")

    code, _, err = probe("--this-host")

    assert code == 1
    assert f"on {socket.gethostname()}" in err
    worker("here", [], heartbeat_age=1, host=socket.gethostname())
    assert probe("--this-host")[0] == 0


def test_health__fails_when_the_oldest_ready_task_waited_longer_than_the_threshold() -> None:
    worker("w1", [], heartbeat_age=1)
    ready_task(waited=30)
    ready_task(waited=700)
    Task.objects.create(task_name="t", run_at=timezone.now() + timedelta(hours=1))

    code, _, err = probe("--max-ready-age", "600")

    assert code == 1
    assert err.startswith("unhealthy: backlog: the oldest ready task has waited 70")
    assert probe("--max-ready-age", "800")[0] == 0
    assert probe("--max-ready-age", "600", "--no-backlog")[0] == 0


def test_health__ignores_running_tasks_and_other_queues_in_the_backlog() -> None:
    worker("w1", [], heartbeat_age=1)
    ready_task(waited=900, locked_by="w1")
    ready_task(waited=900, queue="reports")

    assert probe("--queue", "default", "--max-ready-age", "60")[0] == 0
    assert probe("--queue", "reports", "--max-ready-age", "60")[0] == 1


def test_health_json__reports_every_check_and_exits_non_zero_when_one_fails() -> None:
    worker("w1", [], heartbeat_age=1)
    ready_task(waited=900)

    code, out, err = probe("--json", "--max-ready-age", "60")

    assert code == 1 and err == ""
    data = json.loads(out)
    assert data["ok"] is False
    assert [(c["name"], c["ok"]) for c in data["checks"]] == [("workers", True), ("backlog", False)]


def test_health__a_database_error_fails_the_probe_with_its_first_line() -> None:
    error = OperationalError("connection refused\nIs the server running?")
    with mock.patch.object(health, "check_workers", side_effect=error):
        code, _, err = probe()

    assert code == 1
    assert err.strip() == "unhealthy: database: OperationalError: connection refused"


@pytest.mark.django_db(transaction=True)
def test_health__rejects_a_negative_threshold() -> None:
    result = run_command("background_tasks", "health", "--max-ready-age", "-5")

    assert result.returncode == 2
    assert "expected a number of seconds >= 0" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_health__exit_code_of_the_real_command_is_1_when_no_worker_runs() -> None:
    result = run_command("background_tasks", "health")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "unhealthy: workers: no worker has sent a heartbeat in the last 60s"
    ]
