"""The README's quickstart, end to end in one process."""

from __future__ import annotations

import pytest

from background_tasks.models import CompletedTask, Task
from background_tasks.testing import run_tasks
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


def test_call__enqueues_a_task_row_and_returns_it() -> None:
    task = tasks.send_newsletter(42, template="daily")

    assert isinstance(task, Task)
    assert Task.objects.get(pk=task.pk).params == {"args": [42], "kwargs": {"template": "daily"}}
    assert task.queue == "emails"
    assert tasks.CALLS == []


def test_run_tasks__runs_the_call_and_records_success() -> None:
    task = tasks.send_newsletter(42)

    assert run_tasks() == 1

    assert tasks.CALLS == [((42,), {"template": "weekly"})]
    completed = CompletedTask.objects.get(task_id=task.pk)
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert completed.result == "sent weekly to 42"
    assert not Task.objects.exists()
