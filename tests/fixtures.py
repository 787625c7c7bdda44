"""Fixtures and factories shared by the test modules (conftest.py makes the fixtures visible).

- ``staff``: log in a staff user holding only the given background_tasks permissions.
- ``clock``: time frozen at ``clock_start`` (a module overrides that fixture to start elsewhere).
- ``spawn``: start ``process_tasks`` subprocesses; whatever is still running is killed at the end.
- ``created``: every row ``task_created`` was sent for, in order.
- ``make_task``, ``make_completed``: rows written directly, for tests that need a given state.
- ``row_locked_elsewhere``: hold a row lock from another connection, as a claiming worker does.
- ``runner_claims``: the ids each runner-side claim (in an outcome's transaction) returned.
- ``refuse_archiving``: make the database refuse the archive of one task, as a bad value would.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.db import DataError, connection, transaction
from django.test import Client

from background_tasks import archive_sql, signals
from background_tasks import runner as runner_module
from background_tasks.models import CompletedTask, Task
from tests.helpers import start_worker, worker_env

if TYPE_CHECKING:
    from django.contrib.auth.models import User

NEWSLETTER = "tests.testapp.tasks.send_newsletter"
#: Where ``clock`` starts unless a module overrides ``clock_start``.
CLOCK_START = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)

StaffLogin = Callable[..., Client]
Clock = time_machine.Traveller
Spawn = Callable[..., "subprocess.Popen[str]"]


# -- the admin ---------------------------------------------------------------------------------


@pytest.fixture
def staff(client: Client, django_user_model: type[User]) -> StaffLogin:
    """Log a staff user with only the given background_tasks permissions in."""

    def login(*codenames: str) -> Client:
        user = django_user_model.objects.create_user(
            username="operator", password="not-used", is_staff=True
        )
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="background_tasks", codename__in=codenames
            )
        )
        client.force_login(user)
        return client

    return login


# -- time --------------------------------------------------------------------------------------


@pytest.fixture
def clock_start() -> datetime:
    """Where ``clock`` freezes time; override it in a module to start elsewhere."""
    return CLOCK_START


@pytest.fixture
def clock(clock_start: datetime) -> Iterator[Clock]:
    """Freeze time at ``clock_start``; move it with ``clock.shift()`` or ``clock.move_to()``."""
    with time_machine.travel(clock_start, tick=False) as traveller:
        yield traveller


# -- worker subprocesses ----------------------------------------------------------------------


def kill_if_running(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()


class Spawner:
    """Starts ``process_tasks`` subprocesses and, on ``close()``, kills what is left and reaps.

    ``kill`` is called for every process started, exited or not (a supervisor's children may
    outlive it).
    """

    def __init__(
        self,
        default_args: Sequence[str] = ("--log-std",),
        kill: Callable[[subprocess.Popen[str]], None] = kill_if_running,
        **popen: Any,
    ) -> None:
        self.default_args = list(default_args)
        self.kill = kill
        self.popen = popen
        self.started: list[subprocess.Popen[str]] = []

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = start_worker(
            [*self.default_args, *args], env=worker_env(**(env or {})), **self.popen
        )
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.started:
            self.kill(proc)
            proc.communicate()  # reaps the process and closes its pipes


@pytest.fixture
def spawn(transactional_db: None) -> Iterator[Spawn]:
    """Start ``process_tasks`` subprocesses (logging to their pipes); kill leftovers at the end.

    Depending on ``transactional_db`` makes this teardown run before the database is flushed.
    """
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.close()


# -- signals -----------------------------------------------------------------------------------


@pytest.fixture
def created() -> Iterator[list[Task]]:
    """Every row ``task_created`` was sent for, in the order it was sent."""
    sent: list[Task] = []

    def remember(sender: str, task: Task, **kwargs: object) -> None:
        sent.append(task)

    signals.task_created.connect(remember, dispatch_uid="tests-fixtures-created")
    yield sent
    signals.task_created.disconnect(dispatch_uid="tests-fixtures-created")


# -- rows --------------------------------------------------------------------------------------


def make_task(**fields: Any) -> Task:
    """Write a Task row directly (no enqueue): a newsletter call unless ``fields`` say otherwise."""
    fields.setdefault("task_name", NEWSLETTER)
    fields.setdefault("params", {"args": [1], "kwargs": {}})
    task: Task = Task.objects.create(**fields)
    return task


def make_completed(status: str = CompletedTask.Status.FAILED, **fields: Any) -> CompletedTask:
    """Write a CompletedTask record directly: a newsletter call unless ``fields`` say otherwise."""
    fields.setdefault("task_name", NEWSLETTER)
    fields.setdefault("params", {"args": [1], "kwargs": {}})
    fields.setdefault("task_id", 10_000)
    completed: CompletedTask = CompletedTask.objects.create(status=status, **fields)
    return completed


# -- row locks ---------------------------------------------------------------------------------


@contextmanager
def row_locked_elsewhere(pk: int, timeout: float = 30) -> Iterator[None]:
    """Hold ``SELECT ... FOR UPDATE`` on Task ``pk`` from a second connection until the block
    ends, as a worker between its claim and its commit does. Needs ``transaction=True``."""
    locked, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                list(Task.objects.select_for_update().filter(pk=pk))
                locked.set()
                release.wait(timeout * 2)
        except BaseException as exc:  # reported in the test's thread
            failure.append(exc)
        finally:
            locked.set()
            connection.close()  # this thread's own connection

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(timeout), "the second connection never locked the row"
        assert not failure, failure
        yield
    finally:
        release.set()
        holder.join(timeout)
    assert not failure, failure


@pytest.fixture
def runner_claims(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Record the ids each runner-side claim (the one in the outcome's transaction) returned."""
    claims: list[list[int]] = []
    claim = runner_module.claim_tasks

    def recorded(*args: Any, **kwargs: Any) -> list[Task]:
        claimed = claim(*args, **kwargs)
        claims.append([task.pk for task in claimed])
        return claimed

    monkeypatch.setattr(runner_module, "claim_tasks", recorded)
    return claims


def refuse_archiving(monkeypatch: pytest.MonkeyPatch, task_id: int) -> None:
    """Make the move of task ``task_id`` to the history fail as a value the database refuses."""
    move = archive_sql.move_held

    def refuse(connection: Any, moved_id: int, *args: Any) -> bool:
        if moved_id == task_id:
            raise DataError("value out of range (as the database would say)")
        return move(connection, moved_id, *args)

    monkeypatch.setattr(archive_sql, "move_held", refuse)
