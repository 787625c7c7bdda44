"""Operator actions that make a task ready wake idle workers (PostgreSQL NOTIFY), from the
command and from the admin alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from background_tasks.models import CompletedTask, Task
from background_tasks.wakeup import CHANNEL

pytestmark = [
    # NOTIFY is delivered on commit: the actions must really commit.
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="NOTIFY is PostgreSQL's"),
]

NAME = "tests.testapp.tasks.send_newsletter"


def scheduled_task(queue: str) -> Task:
    task: Task = Task.objects.create(
        task_name=NAME,
        params={"args": [1], "kwargs": {}},
        queue=queue,
        run_at=timezone.now() + timedelta(hours=1),
    )
    return task


def failed_record(queue: str) -> CompletedTask:
    now = timezone.now()
    record: CompletedTask = CompletedTask.objects.create(
        task_name=NAME,
        params={"args": [1], "kwargs": {}},
        queue=queue,
        task_id=10_000,
        status=CompletedTask.Status.FAILED,
        run_at=now,
        finished_at=now,
        last_error="boom",
    )
    return record


def notified_queues(action: Callable[[], Any]) -> list[str]:
    """Run ``action`` while this connection LISTENs; return the queues named by the wake-ups."""
    with connection.cursor() as cursor:
        cursor.execute(f"LISTEN {CHANNEL}")
    try:
        action()
        # The notifications were queued at commit, before ``action`` returned: a short read
        # finds them all, and waits the full timeout only when none was sent.
        return sorted(
            note.payload
            for note in connection.connection.notifies(timeout=1.0)  # type: ignore[union-attr]
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"UNLISTEN {CHANNEL}")


def command(*args: str) -> None:
    call_command("background_tasks", *args, stdout=StringIO(), stderr=StringIO())


def post_action(client: Client, model: str, action: str, pk: int) -> None:
    url = reverse(f"admin:background_tasks_{model}_changelist")
    response = client.post(url, {"action": action, "_selected_action": [str(pk)]}, follow=True)
    assert response.status_code == 200


def test_run_now__from_the_command_wakes_the_workers_of_the_task_queue() -> None:
    task = scheduled_task("emails")

    assert notified_queues(lambda: command("run-now", str(task.pk))) == ["emails"]
    assert Task.objects.get(pk=task.pk).run_at <= timezone.now()


def test_run_now__from_the_admin_wakes_the_workers_of_the_task_queue(admin_client: Client) -> None:
    task = scheduled_task("reports")

    assert notified_queues(lambda: post_action(admin_client, "task", "run_now", task.pk)) == [
        "reports"
    ]


def test_run_now__of_a_task_already_due_sends_no_wake_up() -> None:
    task = scheduled_task("emails")
    Task.objects.filter(pk=task.pk).update(run_at=timezone.now() - timedelta(minutes=1))

    assert notified_queues(lambda: command("run-now", str(task.pk))) == []


def test_retry__from_the_command_wakes_the_workers_of_the_copy_queue() -> None:
    record = failed_record("emails")

    assert notified_queues(lambda: command("retry", str(record.pk))) == ["emails"]
    assert Task.objects.filter(queue="emails", task_name=NAME).count() == 1


def test_retry__from_the_admin_wakes_the_workers_of_the_copy_queue(admin_client: Client) -> None:
    record = failed_record("reports")

    assert notified_queues(
        lambda: post_action(admin_client, "completedtask", "retry", record.pk)
    ) == ["reports"]
