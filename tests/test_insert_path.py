"""The one insert path for new Task rows (``enqueue.insert_tasks``) and the producers using it."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from background_tasks import enqueue, operations, periodic, signals
from background_tasks.admin.schedules import run_schedule_now
from background_tasks.exceptions import InvalidTaskError
from background_tasks.models import CompletedTask, Schedule, Task
from background_tasks.testing import run_tasks
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def wakeups(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (database, queue) the insert path woke workers for."""
    woken: list[tuple[str, str]] = []
    monkeypatch.setattr(enqueue, "notify_ready", lambda using, queue: woken.append((using, queue)))
    # Every wake-up goes through notify_ready, none rides in an INSERT (tests/test_wakeup.py
    # checks on PostgreSQL that one riding in an INSERT reaches a listener).
    monkeypatch.setattr(enqueue, "notify_clause", lambda using, queue: None)
    return woken


def row(key: str, *, queue: str = "default", run_at: datetime | None = None, **fields: Any) -> Task:
    params = {"args": [key], "kwargs": {}}
    when = run_at or timezone.now()
    return Task(
        task_name="tests.testapp.tasks.record",
        params=params,
        queue=queue,
        run_at=when,
        scheduled_at=when,
        **fields,
    )


def test_insert_tasks__inserts_every_row_and_sends_task_created_for_each(
    created: list[Task], wakeups: list[tuple[str, str]]
) -> None:
    rows = [row("a"), row("b", queue="mail"), row("c")]

    standing = enqueue.insert_tasks(rows, using="default")

    assert standing == rows and all(r.pk for r in rows)
    assert Task.objects.count() == 3
    assert created == rows


def test_insert_tasks__wakes_each_queue_with_a_ready_row_once_and_not_for_later_rows(
    created: list[Task], wakeups: list[tuple[str, str]]
) -> None:
    later = timezone.now() + timedelta(hours=1)
    rows = [row("a"), row("b"), row("c", queue="mail"), row("d", queue="slow", run_at=later)]

    enqueue.insert_tasks(rows, using="default")

    assert wakeups == [("default", "default"), ("default", "mail")]


def test_insert_tasks__a_unique_row_with_a_pending_copy_returns_the_copy_and_sends_nothing(
    created: list[Task], wakeups: list[tuple[str, str]]
) -> None:
    first = row("a", unique_key="k")
    enqueue.insert_task(first, using="default")
    created.clear()
    wakeups.clear()

    second = enqueue.insert_task(row("a", unique_key="k"), using="default")

    assert second.pk == first.pk
    assert Task.objects.count() == 1
    assert created == [] and wakeups == []


def test_insert_tasks__replace_deletes_pending_duplicates_first(
    wakeups: list[tuple[str, str]],
) -> None:
    old = enqueue.insert_task(row("a"), using="default")

    new = enqueue.insert_task(row("a"), using="default", replace=True)

    assert list(Task.objects.values_list("pk", flat=True)) == [new.pk]
    assert new.pk != old.pk


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"queue": "q" * 101}, "is refused: it is longer than 100 characters"),
        ({"priority": "high"}, "priority must be an integer"),
        ({"priority": True}, "priority must be an integer"),
        ({"verbose_name": "v\x00"}, "verbose_name .* is refused: it contains a NUL"),
        ({"task_name": ""}, "Task name '' is refused: it is empty"),
    ],
)
def test_insert_tasks__a_bad_row_is_refused_and_no_row_of_the_list_is_written(
    fields: dict[str, Any], message: str, created: list[Task]
) -> None:
    bad = row("bad")
    for name, value in fields.items():
        setattr(bad, name, value)

    with pytest.raises(InvalidTaskError, match=message):
        enqueue.insert_tasks([row("good"), bad], using="default")

    assert Task.objects.count() == 0 and created == []


def test_insert_task__a_raising_receiver_propagates_to_a_caller(
    wakeups: list[tuple[str, str]],
) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("receiver broke")

    signals.task_created.connect(broken, dispatch_uid="test-broken")
    try:
        with pytest.raises(RuntimeError, match="receiver broke"):
            enqueue.insert_task(row("a"), using="default")
    finally:
        signals.task_created.disconnect(dispatch_uid="test-broken")


def test_insert_task__robust_signal_logs_a_raising_receiver_and_the_row_stands(
    wakeups: list[tuple[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("receiver broke")

    signals.task_created.connect(broken, dispatch_uid="test-broken")
    try:
        with caplog.at_level(logging.ERROR, logger="background_tasks"):
            inserted = enqueue.insert_task(row("a"), using="default", robust_signal=True)
    finally:
        signals.task_created.disconnect(dispatch_uid="test-broken")

    assert Task.objects.filter(pk=inserted.pk).exists()
    assert "event=signal_receiver_failed signal=task_created" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_insert_task__robust_signal_a_receiver_s_failed_query_leaves_the_transaction_usable(
    wakeups: list[tuple[str, str]],
) -> None:
    def bad_query(**kwargs: object) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_anywhere")

    signals.task_created.connect(bad_query, dispatch_uid="test-bad-query")
    try:
        with transaction.atomic():
            inserted = enqueue.insert_task(row("a"), using="default", robust_signal=True)
            # The transaction goes on: on PostgreSQL an unguarded failed query would abort it.
            Task.objects.filter(pk=inserted.pk).update(verbose_name="still usable")
    finally:
        signals.task_created.disconnect(dispatch_uid="test-bad-query")

    assert Task.objects.get(pk=inserted.pk).verbose_name == "still usable"


# -- every producer goes through it ------------------------------------------------------------


def test_producer__a_call_of_a_task_wakes_its_queue_and_sends_task_created(
    created: list[Task], wakeups: list[tuple[str, str]]
) -> None:
    task = tasks.send_newsletter(1)

    assert created == [task] and wakeups == [("default", "emails")]


def test_producer__a_cron_tick_wakes_its_queue_and_sends_task_created(
    created: list[Task], wakeups: list[tuple[str, str]]
) -> None:
    now = timezone.now()
    schedule = Schedule.objects.create(
        name="tick",
        task_name=tasks.CRON_TICK,
        cron="* * * * *",
        next_fire_at=now,
        params={"args": ["k"], "kwargs": {}},
    )

    task = periodic.fire_one(schedule, now)

    assert task is not None and created == [task]
    assert wakeups == [("default", "default")]
    assert Schedule.objects.get(pk=schedule.pk).last_task_id == task.pk


def test_producer__run_now_on_a_schedule_wakes_its_queue_and_sends_task_created(
    created: list[Task], wakeups: list[tuple[str, str]]
) -> None:
    schedule = Schedule.objects.create(
        name="now", task_name=tasks.CRON_TICK, cron="0 3 * * *", queue="mail"
    )

    task = run_schedule_now(schedule)

    assert created == [task] and wakeups == [("default", "mail")]


def test_producer__a_retry_of_a_completed_task_wakes_its_queue_and_sends_task_created(
    created: list[Task], wakeups: list[tuple[str, str]]
) -> None:
    tasks.always_fails()
    run_tasks()
    run_tasks()
    run_tasks()
    completed = CompletedTask.objects.get()
    created.clear()
    wakeups.clear()

    fresh = operations.retry_completed(completed)

    assert created == [fresh] and wakeups == [("default", "default")]
