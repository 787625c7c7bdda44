"""Tasks used by the test suite."""

from __future__ import annotations

import os
import time

from background_tasks import PermanentFailure, TaskCancelled, background, is_cancelled

from .models import TaskRun

CALLS: list[tuple[tuple[object, ...], dict[str, object]]] = []


@background
def record(key: str) -> None:
    TaskRun.objects.create(key=key, worker_pid=os.getpid())


@background(queue="emails", max_attempts=5)
def send_newsletter(user_id: int, template: str = "weekly") -> str:
    CALLS.append(((user_id,), {"template": template}))
    return f"sent {template} to {user_id}"


@background(name="tests.always_fails", max_attempts=3, backoff=0)
def always_fails() -> None:
    raise RuntimeError("boom")


@background(backoff=0)
def fails_until(key: str, failures: int) -> str:
    """Fail ``failures`` times (counted in TaskRun), then succeed."""
    TaskRun.objects.create(key=key, worker_pid=os.getpid())
    if TaskRun.objects.filter(key=key).count() <= failures:
        raise ValueError(f"failure {key}")
    return "ok"


@background
def fails_permanently() -> None:
    raise PermanentFailure("the input is wrong; retrying will not help")


@background
def cancels_itself() -> None:
    raise TaskCancelled("nothing to do any more")


@background
def no_arguments() -> None:
    CALLS.append(((), {}))


@background
def returns_set() -> object:
    return {1, 2}


@background
def exits() -> None:
    raise SystemExit(3)


@background
def sleeps(seconds: float, key: str = "sleeps") -> None:
    """Sleep in small steps, stopping early when cancelled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if is_cancelled():
            return
        time.sleep(0.05)
    TaskRun.objects.create(key=key, worker_pid=os.getpid())
