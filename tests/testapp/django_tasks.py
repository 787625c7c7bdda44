"""Tasks of Django's own framework (``django.tasks``, or the backport), for the backend's tests.

Imported only by tests that skip when neither is installed.
"""

from __future__ import annotations

import os

from tests.tasks_framework import TaskContext, task

from .models import TaskRun


@task
def add(a: int, b: int) -> int:
    return a + b


@task(priority=10)
def greet(name: str, punctuation: str = "!") -> str:
    return f"Hello {name}{punctuation}"


@task
def record(key: str) -> None:
    TaskRun.objects.create(key=key, worker_pid=os.getpid())


@task
def fails(message: str) -> None:
    raise ValueError(message)


@task
def options_named_like_ours(queue: str, priority: int) -> str:
    """Parameters a @background call would take for itself are fine for a Django Task."""
    return f"{queue}:{priority}"


@task(takes_context=True)
def knows_its_attempt(context: TaskContext, key: str) -> dict[str, object]:
    TaskRun.objects.create(key=key, worker_pid=os.getpid())
    return {"attempt": context.attempt, "id": context.task_result.id}


@task
async def doubles(x: int) -> int:
    return x * 2


def plain_function() -> None:
    """Not a Task: a row naming it must never run it."""


#: The same Task under a second name: only its own module path names it.
alias_of_add = add
