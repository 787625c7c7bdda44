"""Django Tasks for the backend conformance tests (``tests/test_django_tasks_conformance.py``).

The worker subprocess imports this module when it first meets one of its rows; the receivers
below then record each of Django's task signals it sends as a ``TaskRun`` row
(``<signal>:<result id>:<status>``), which the test reads back.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tests.tasks_framework import TaskContext, task, task_enqueued, task_finished, task_started

from .models import TaskRun

PREFIX = __name__ + "."


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def fails(message: str) -> None:
    raise ValueError(message)


@task
def returns_a_set() -> Any:
    return {1, 2}


@task(takes_context=True)
def knows_its_context(context: TaskContext, key: str) -> dict[str, Any]:
    return {
        "key": key,
        "attempt": context.attempt,
        "id": context.task_result.id,
        "worker_ids": context.task_result.worker_ids,
    }


@task
async def doubles(x: int) -> int:
    return x * 2


@task
def waits_for_release(key: str) -> str:
    """Record ``<key>:started``, then wait (30 s at most) for a ``<key>:release`` row."""
    TaskRun.objects.create(key=f"{key}:started", worker_pid=os.getpid())
    deadline = time.monotonic() + 30
    while not TaskRun.objects.filter(key=f"{key}:release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} was never released")
        time.sleep(0.05)
    return "released"


def _recorder(name: str) -> Any:
    def record(sender: Any, task_result: Any, **kwargs: Any) -> None:
        if task_result.task.module_path.startswith(PREFIX):
            TaskRun.objects.create(
                key=f"{name}:{task_result.id}:{task_result.status}", worker_pid=os.getpid()
            )

    return record


_RECEIVERS = {name: _recorder(name) for name in ("enqueued", "started", "finished")}
task_enqueued.connect(_RECEIVERS["enqueued"], dispatch_uid=PREFIX + "enqueued")
task_started.connect(_RECEIVERS["started"], dispatch_uid=PREFIX + "started")
task_finished.connect(_RECEIVERS["finished"], dispatch_uid=PREFIX + "finished")
