"""Tasks used by the test suite."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from background_tasks import PermanentFailure, TaskCancelled, background, is_cancelled
from background_tasks.signals import task_created

from .models import TaskRun

if TYPE_CHECKING:
    from background_tasks.models import Task

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


@background(name="tests.nightly_report", cron="0 3 * * *")
def nightly_report(kind: str = "full") -> None:
    TaskRun.objects.create(key=f"nightly:{kind}", worker_pid=os.getpid())


@background(name="tests.overruns", timeout=1, max_attempts=2, backoff=0)
def overruns(key: str) -> None:
    """Record the start, then block far past the time limit (a hard kill is the only way out)."""
    TaskRun.objects.create(key=f"{key}:started", worker_pid=os.getpid())
    time.sleep(600)  # never interrupted by the task itself: only the supervisor's kill ends it


@background(name="tests.unique_record", unique=True)
def unique_record(key: str) -> None:
    TaskRun.objects.create(key=key, worker_pid=os.getpid())


@background(name="tests.replaced_record", remove_existing_tasks=True)
def replaced_record(key: str) -> None:
    TaskRun.objects.create(key=key, worker_pid=os.getpid())


@background(name="tests.delayed_record", schedule=60)
def delayed_record(key: str) -> None:
    TaskRun.objects.create(key=key, worker_pid=os.getpid())


@background(name="tests.flaky", backoff=300)
def flaky(key: str, failures: int) -> str:
    """Fail ``failures`` times (counted in TaskRun), then succeed; retries wait 5 minutes."""
    TaskRun.objects.create(key=key, worker_pid=os.getpid())
    if TaskRun.objects.filter(key=key).count() <= failures:
        raise ValueError(f"failure {key}")
    return "ok"


CRON_TICK = "tests.cron_tick"


@background(name=CRON_TICK)
def cron_tick(key: str) -> None:
    TaskRun.objects.create(key=key, worker_pid=os.getpid())


def _note_cron_fire(sender: str, task: Task, **kwargs: object) -> None:
    """Record which process enqueued each tick of ``cron_tick`` (as ``fired:<key>``)."""
    if sender == CRON_TICK:
        key = task.params["args"][0]
        TaskRun.objects.create(key=f"fired:{key}", worker_pid=os.getpid())


task_created.connect(_note_cron_fire, dispatch_uid="tests.testapp.tasks._note_cron_fire")


@background(name="tests.started_then_sleeps", backoff=0)
def started_then_sleeps(key: str, seconds: float) -> None:
    """Record ``<key>:started``, sleep in small steps, then record ``<key>:done``.

    Real-process tests wait on the "started" row to know the task body is running.
    """
    TaskRun.objects.create(key=f"{key}:started", worker_pid=os.getpid())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    TaskRun.objects.create(key=f"{key}:done", worker_pid=os.getpid())


@background(name="tests.fails_with_default_backoff")
def fails_with_default_backoff() -> None:
    raise RuntimeError("fails with the default retry policy")


@background(name="tests.linear_backoff", max_attempts=2, backoff=lambda attempts: attempts * 60)
def fails_with_linear_backoff() -> None:
    raise RuntimeError("retried after attempts * 60 s")


def _broken_backoff(attempts: int) -> float:
    raise ArithmeticError("a bug in the backoff function")


@background(name="tests.broken_backoff", backoff=_broken_backoff)
def fails_with_broken_backoff() -> None:
    raise RuntimeError("the task's own error")


@background(name="tests.loses_its_row", backoff=0)
def loses_its_row(outcome: str) -> str:
    """Hand this task's row to another worker while running (as a rescue would), then end."""
    from background_tasks import current_task
    from background_tasks.models import Task

    running = current_task()
    assert running is not None
    Task.objects.filter(pk=running.pk).update(locked_by="tests:rescuer")
    if outcome == "fail":
        raise RuntimeError("failed after losing the row")
    if outcome == "cancel":
        raise TaskCancelled("cancelled after losing the row")
    return "succeeded after losing the row"


@background(name="tests.stops_when_cancelled")
def stops_when_cancelled() -> str:
    """Have an operator's cancel request arrive mid-run, then stop at the next check."""
    from background_tasks import current_task
    from background_tasks.operations import request_cancel

    running = current_task()
    assert running is not None
    request_cancel([running.pk])
    if is_cancelled():
        return "stopped early"
    return "ran to the end"


@background(name="tests.meets_another", max_attempts=1)
def meets_another(key: str, expected: int = 2) -> None:
    """Arrive, then wait up to 10 s until ``expected`` tasks of ``key`` have arrived.

    It can only succeed when that many of them run at the same time.
    """
    TaskRun.objects.create(key=f"{key}:arrived", worker_pid=os.getpid())
    deadline = time.monotonic() + 10
    while TaskRun.objects.filter(key=f"{key}:arrived").count() < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {expected} {key!r} tasks ran at the same time")
        time.sleep(0.02)


@background(name="tests.fails_with_nul_in_message", max_attempts=1)
def fails_with_nul_in_message() -> None:
    raise ValueError("bad input: a\x00b")


@background(name="tests.returns_nul")
def returns_nul() -> str:
    return "a\x00b"


@background(name="tests.kills_its_process", max_attempts=3, backoff=0)
def kills_its_process(key: str) -> None:
    """Record ``<key>:started``; the first attempt then dies by SIGKILL (as under the OOM killer),
    a later one records ``<key>:done``. Only ever run in process mode: it kills its worker."""
    import signal

    TaskRun.objects.create(key=f"{key}:started", worker_pid=os.getpid())
    if TaskRun.objects.filter(key=f"{key}:started").count() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    TaskRun.objects.create(key=f"{key}:done", worker_pid=os.getpid())


@background(name="tests.blocks", max_attempts=1)
def blocks(key: str) -> None:
    """Record ``<key>:started``, then block; no time limit of its own, so MAX_RUN_TIME applies."""
    TaskRun.objects.create(key=f"{key}:started", worker_pid=os.getpid())
    time.sleep(600)  # only a hard kill ends it


@background(name="tests.record_retried_at_once", backoff=0)
def record_retried_at_once(key: str) -> None:
    """Like ``record``, but a lost or failed attempt is retried at once, not after a backoff."""
    TaskRun.objects.create(key=key, worker_pid=os.getpid())


@background(name="tests.record_without_arguments")
def record_without_arguments() -> None:
    TaskRun.objects.create(key="without-arguments", worker_pid=os.getpid())


@background(name="tests.async_record", backoff=0, max_attempts=2)
async def async_record(key: str, fail: bool = False) -> str:
    """An ``async def`` task: awaits, writes a TaskRun through sync_to_async, returns a value."""
    import asyncio

    from asgiref.sync import sync_to_async

    await asyncio.sleep(0)
    await sync_to_async(TaskRun.objects.create)(key=key, worker_pid=os.getpid())
    if fail:
        raise RuntimeError(f"async failure {key}")
    return f"async {key}"


@background(name="tests.async_knows_its_row")
async def async_knows_its_row() -> int | None:
    """Return the id current_task() gives inside an async task (through sync_to_async)."""
    from asgiref.sync import sync_to_async

    from background_tasks import current_task

    running = await sync_to_async(current_task)()
    return None if running is None else running.pk


@background(name="tests.appends_line", backoff=0)
def appends_line(path: str, key: str, seconds: float = 0.0) -> None:
    """Sleep, then append ``key`` to a file: a task body that does not need the database."""
    time.sleep(seconds)
    with open(path, "a", encoding="utf-8") as runs:
        runs.write(f"{key} {os.getpid()}\n")


@background(name="tests.overruns_after_noting_its_pid", timeout=3, max_attempts=1)
def overruns_after_noting_its_pid(path: str) -> None:
    """Write this process's id to a file, then block past the 3 s time limit."""
    with open(path, "a", encoding="utf-8") as note:
        note.write(f"{os.getpid()}\n")
    time.sleep(600)  # only a hard kill ends it


@background(name="tests.never_returns", max_attempts=2, backoff=0)
def never_returns(path: str) -> None:
    """Note each start in a file, then never return (and have no time limit)."""
    with open(path, "a", encoding="utf-8") as note:
        note.write(f"{os.getpid()}\n")
    time.sleep(3600)


LEAKED: list[bytearray] = []


@background(name="tests.leaks_memory")
def leaks_memory(megabytes: int) -> None:
    """Keep ``megabytes`` MB alive in this process after returning, as a leaking task would."""
    LEAKED.append(bytearray(b"\x01") * (megabytes * 2**20))  # written, so resident


#: Set by a test to let ``waits_for_release`` finish.
RELEASE = threading.Event()


@background(name="tests.waits_for_release", max_attempts=1)
def waits_for_release(key: str) -> None:
    """Wait until a test sets ``RELEASE`` (in process only), then record ``key``; fail after 10s."""
    if not RELEASE.wait(10):
        raise TimeoutError(f"{key!r} was not released within 10 s")
    TaskRun.objects.create(key=key, worker_pid=os.getpid())
